// Command images builds flowplace's container images with internal/images.
//
// By default (what `make images` runs) it builds the released images into
// -out (bin/images): per component a docker-archive <component>.tar of the
// host platform and an OCI layout <component>/ with a linux/amd64+arm64
// index, and prints exactly one line per image on stdout,
//
//	image <component> <digest>
//
// where <digest> is the image index's digest (what a registry shows for the
// pushed layout, to pin as <repo>@<digest>). Progress goes to stderr.
// Arguments name components (default flowplace-agent and
// flowplace-estimator, plus flowplace-karmada-scheduler with
// -karmada-source).
//
// With -lab it builds the lab's cached images instead (`make lab-images`)
// and prints name, ref and docker-archive path, tab separated.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
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
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	lab := fs.Bool("lab", false, "build the lab's images into the cache ("+cacheDir()+") instead")
	out := fs.String("out", "bin/images", "output directory of the released images")
	karmada := fs.String("karmada-source", "", "Karmada checkout; builds "+images.KarmadaScheduler+" too")
	version := fs.String("version", "", "version label and tag (default: git describe --tags --always --dirty)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./hack/images [flags] [component...]\ncomponents: %s\nlab images (-lab): %s\n",
			strings.Join(images.ReleaseComponents(), ", "), strings.Join(images.Names(), ", "))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return err
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
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	start := time.Now()
	if *lab {
		imgs, err := images.Build(ctx, images.Options{SourceDir: src, Logf: logf}, fs.Args()...)
		if err != nil {
			return err
		}
		for _, img := range imgs {
			fmt.Printf("%s\t%s\t%s\n", img.Name, img.Ref, img.Tarball)
		}
		fmt.Fprintf(os.Stderr, "images: %d ready in %s\n", len(imgs), time.Since(start).Round(time.Millisecond))
		return nil
	}
	rel, err := images.Release(ctx, images.ReleaseOptions{
		SourceDir:     src,
		OutDir:        *out,
		Components:    fs.Args(),
		KarmadaSource: *karmada,
		Version:       *version,
		Logf:          logf,
	})
	if err != nil {
		return err
	}
	for _, r := range rel {
		// The index digest (linux/amd64 + linux/arm64), not the host
		// image's config digest that `docker load` shows.
		fmt.Printf("image %s %s\n", r.Name, r.Digest)
	}
	return nil
}

func cacheDir() string {
	d, err := images.CacheDir()
	if err != nil {
		return err.Error()
	}
	return d
}
