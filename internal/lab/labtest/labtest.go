// Package labtest holds what tests that run the lab share.
package labtest

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// BuildCLI builds the flowplace CLI, whose lab-service subcommand the lab
// runs as each demo service, into the test's temporary directory.
func BuildCLI(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "flowplace")
	cmd := exec.Command("go", "build", "-o", out, "github.com/flowplace/flowplace/cmd/flowplace")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build flowplace: %v\n%s", err, b)
	}
	return out
}
