// Command images builds the lab's container images (internal/images) and
// prints one line per image: name, ref and docker-archive path, tab
// separated. `make images` runs it from the repository root; arguments name
// images (default: all of them).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/flowplace/flowplace/internal/images"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(args []string) error {
	for _, a := range args {
		if a == "-h" || a == "--help" {
			fmt.Printf("usage: go run ./hack/images [name...]\nbuilds %v into %s\n", images.Names(), cacheDir())
			return nil
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	src, err := images.FindSourceDir(wd)
	if err != nil {
		return err
	}
	start := time.Now()
	imgs, err := images.Build(ctx, images.Options{
		SourceDir: src,
		Logf:      func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) },
	}, args...)
	if err != nil {
		return err
	}
	for _, img := range imgs {
		fmt.Printf("%s\t%s\t%s\n", img.Name, img.Ref, img.Tarball)
	}
	fmt.Fprintf(os.Stderr, "images: %d ready in %s\n", len(imgs), time.Since(start).Round(time.Millisecond))
	return nil
}

func cacheDir() string {
	d, err := images.CacheDir()
	if err != nil {
		return err.Error()
	}
	return d
}
