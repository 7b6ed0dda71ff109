package filelock

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// A second Lock waits (and says so once) until the first is released, and
// gives up when its context ends.
func TestLockWaitsAndCancels(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := Lock(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	waited := 0
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := Lock(ctx, path, func() { waited++ }); err == nil {
		t.Fatal("a second Lock succeeded while the first is held")
	}
	if waited != 1 {
		t.Errorf("waiting called %d times, want 1", waited)
	}
	unlock()
	unlock2, err := Lock(context.Background(), path, func() { t.Error("waited for a free lock") })
	if err != nil {
		t.Fatal(err)
	}
	unlock2()
}
