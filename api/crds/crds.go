// Package crds embeds flowplace's generated CRD manifests, so binaries can
// install them without the source tree.
package crds

import "embed"

// FS holds the CRD YAML files generated from api/v1alpha1.
//
//go:embed *.yaml
var FS embed.FS
