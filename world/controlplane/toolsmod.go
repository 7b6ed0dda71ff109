package controlplane

import (
	"embed"
	"fmt"
	"os"
	"path/filepath"
)

// The tools module (tools/) is the canonical source: `go mod tidy` and
// dependency bumps happen there. go:embed cannot reach into a directory that
// has its own go.mod, so toolsmod/ holds a byte-for-byte copy under names Go
// does not treat as module files; TestEmbeddedToolsModuleInSync fails when
// the two differ. A flowplace binary builds the control plane from this copy
// wherever it runs, and hashes the same bytes into the cache key.
//
//go:generate sh -c "cp tools/go.mod toolsmod/go.mod.txt && cp tools/go.sum toolsmod/go.sum.txt && cp tools/tools.go toolsmod/tools.go.txt"
//go:embed toolsmod/go.mod.txt toolsmod/go.sum.txt toolsmod/tools.go.txt
var toolsFS embed.FS

// toolsFiles are the tools module's files, in the order CacheKey hashes the
// first two of them.
var toolsFiles = []string{"go.mod", "go.sum", "tools.go"}

// toolsSource is the tools module that binaries are built from: a directory
// (FLOWPLACE_CONTROLPLANE_TOOLS) or the copy embedded in this binary.
type toolsSource struct {
	dir   string            // "" means embedded
	files map[string][]byte // go.mod, go.sum, tools.go
}

func (s toolsSource) String() string {
	if s.dir == "" {
		return "the tools module embedded in this binary"
	}
	return s.dir
}

func embeddedTools() toolsSource {
	s := toolsSource{files: map[string][]byte{}}
	for _, f := range toolsFiles {
		b, err := toolsFS.ReadFile("toolsmod/" + f + ".txt")
		if err != nil {
			panic(fmt.Sprintf("controlplane: embedded tools module lacks %s: %v", f, err)) // fixed at compile time
		}
		s.files[f] = b
	}
	return s
}

func dirTools(dir string) (toolsSource, error) {
	s := toolsSource{dir: dir, files: map[string][]byte{}}
	for _, f := range toolsFiles[:2] { // tools.go only matters to `go mod tidy`
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return s, fmt.Errorf("%w: reading tools module: %v", ErrNoToolchain, err)
		}
		s.files[f] = b
	}
	return s, nil
}

// currentTools is FLOWPLACE_CONTROLPLANE_TOOLS when set (to try a changed
// tools module without regenerating the copy), else the embedded copy. It
// does not depend on the working directory, so a binary behaves the same
// inside and outside a checkout, and finds the cache `make controlplane-bin`
// filled from the same bytes.
func currentTools() (toolsSource, error) {
	if d := os.Getenv("FLOWPLACE_CONTROLPLANE_TOOLS"); d != "" {
		abs, err := filepath.Abs(d)
		if err != nil {
			return toolsSource{}, fmt.Errorf("controlplane: FLOWPLACE_CONTROLPLANE_TOOLS: %w", err)
		}
		return dirTools(abs)
	}
	return embeddedTools(), nil
}

// materialize returns a directory holding the module to run `go build` in,
// writing the embedded copy under scratch when there is no directory.
func (s toolsSource) materialize(scratch string) (string, error) {
	if s.dir != "" {
		return s.dir, nil
	}
	if err := os.RemoveAll(scratch); err != nil {
		return "", fmt.Errorf("controlplane: clearing tools module scratch: %w", err)
	}
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		return "", fmt.Errorf("controlplane: writing tools module: %w", err)
	}
	for _, f := range toolsFiles {
		if err := os.WriteFile(filepath.Join(scratch, f), s.files[f], 0o644); err != nil {
			return "", fmt.Errorf("controlplane: writing tools module: %w", err)
		}
	}
	return scratch, nil
}
