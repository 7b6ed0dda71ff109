// Package charts holds flowplace's Helm chart (charts/flowplace), the single
// source of every manifest that installs flowplace, and renders it with
// Helm's own Go library, so that `flowplace addons enable` and `helm install`
// can never produce different objects.
package charts

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
)

// Dir is the chart's directory, relative to the repository root.
const Dir = "charts/flowplace"

//go:embed all:flowplace
var files embed.FS

// Load returns the embedded chart.
func Load() (*chart.Chart, error) {
	var bf []*loader.BufferedFile
	err := fs.WalkDir(files, "flowplace", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		bf = append(bf, &loader.BufferedFile{Name: strings.TrimPrefix(p, "flowplace/"), Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("charts: reading the embedded chart: %w", err)
	}
	c, err := loader.LoadFiles(bf)
	if err != nil {
		return nil, fmt.Errorf("charts: loading %s: %w", path.Base(Dir), err)
	}
	return c, nil
}
