package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// The key of a Go image covers exactly what its `go build` reads: the
// toolchain, env and flags, go.mod and go.sum (which pin every dependency in
// the module cache), and the files (Go, assembly, embedded, ...) of every
// package of the module, or of a local replace, in the binary's import
// graph, as `go list -deps` reports them for linux/amd64 without cgo. So an
// edit elsewhere in the tree (a test, another command, docs) rebuilds
// nothing.
//
// `go list` over the Kubernetes dependencies takes ~0.3 s, too much for every
// warm call, so its result is memoized in .keys/<tree>.json under a hash of
// the whole tree (treeHash, ~10 ms): a warm call lists nothing.

// goKeys fills in.keys and in.desc for specs.
func goKeys(ctx context.Context, root string, in *inputs, specs []spec) error {
	tree, err := treeHash(in.src)
	if err != nil {
		return err
	}
	memoPath := filepath.Join(root, ".keys", hashString(fmt.Sprintf("layout=%s\ngo=%s\nenv=%s\nflags=%s\ntree=%s\n",
		layoutVersion, in.goVer, strings.Join(goBuildEnv, " "), strings.Join(goBuildFlags, " "), tree))+".json")
	memo := map[string]memoEntry{}
	if data, err := os.ReadFile(memoPath); err == nil {
		_ = json.Unmarshal(data, &memo) // a broken memo is recomputed
	}
	var todo []spec
	for _, s := range specs {
		if e, ok := memo[s.name]; ok && e.Key != "" {
			in.keys[s.name], in.desc[s.name] = e.Key, e.Inputs
		} else {
			todo = append(todo, s)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	listed, err := listKeys(ctx, in, todo)
	if err != nil {
		return err
	}
	for name, e := range listed {
		in.keys[name], in.desc[name] = e.Key, e.Inputs
		memo[name] = e
	}
	// A file edited while go list ran would tie this tree to the keys of
	// another one: memoize only when the tree is still the one hashed.
	if again, err := treeHash(in.src); err != nil || again != tree {
		return err
	}
	if err := writeFileAtomic(memoPath, memo); err != nil {
		return fmt.Errorf("images: memoizing cache keys: %w", err)
	}
	return nil
}

type memoEntry struct {
	Key    string `json:"key"`
	Inputs string `json:"inputs"`
}

// listedPackage is what `go list -json` says about one package.
type listedPackage struct {
	ImportPath string
	Dir        string
	Standard   bool
	Module     *struct {
		Path    string
		Main    bool
		Replace *struct{ Path, Version, Dir string }
	}
	GoFiles, CgoFiles, SFiles, HFiles, SysoFiles, EmbedFiles []string
	Deps                                                     []string
}

// local reports whether the package's files are read from a directory that
// go.sum does not pin: the main module or a directory replace.
func (p *listedPackage) local() bool {
	if p.Standard || p.Module == nil {
		return false
	}
	return p.Module.Main || (p.Module.Replace != nil && p.Module.Replace.Version == "")
}

// listKeys runs one `go list -deps` for specs and hashes each one's inputs.
func listKeys(ctx context.Context, in *inputs, specs []spec) (map[string]memoEntry, error) {
	args := []string{"list", "-deps", "-e", "-json=ImportPath,Dir,Standard,Module,GoFiles,CgoFiles,SFiles,HFiles,SysoFiles,EmbedFiles,Deps"}
	for _, s := range specs {
		args = append(args, s.pkg)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = in.src
	cmd.Env = append(os.Environ(), goBuildEnv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("images: go list in %s: %w\n%s", in.src, err, tail(stderr.String(), 20))
	}
	pkgs := map[string]*listedPackage{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		p := new(listedPackage)
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("images: decoding go list output: %w", err)
		}
		pkgs[p.ImportPath] = p
	}
	// go.sum is absent in a module without dependencies.
	modNames := []string{"go.mod"}
	if _, err := os.Stat(filepath.Join(in.src, "go.sum")); err == nil {
		modNames = append(modNames, "go.sum")
	}
	modFiles, err := hashFiles(in.src, modNames)
	if err != nil {
		return nil, err
	}
	res := map[string]memoEntry{}
	for _, s := range specs {
		rootPath := ModulePath + "/" + strings.TrimPrefix(s.pkg, "./")
		rp, ok := pkgs[rootPath]
		if !ok {
			return nil, fmt.Errorf("images: go list in %s did not list %s", in.src, rootPath)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "layout=%s\nname=%s\npkg=%s\nbinary=%s\ngo=%s\nenv=%s\nflags=%s\n%s",
			layoutVersion, s.name, s.pkg, s.binary, in.goVer, strings.Join(goBuildEnv, " "), strings.Join(goBuildFlags, " "), modFiles)
		closure := append([]string{rootPath}, rp.Deps...)
		slices.Sort(closure)
		nfiles, npkgs := 0, 0
		h := sha256.New()
		for _, ip := range slices.Compact(closure) {
			p := pkgs[ip]
			if p == nil || !p.local() {
				continue
			}
			var files []string
			for _, l := range [][]string{p.GoFiles, p.CgoFiles, p.SFiles, p.HFiles, p.SysoFiles, p.EmbedFiles} {
				files = append(files, l...)
			}
			slices.Sort(files)
			sums, err := hashFiles(p.Dir, slices.Compact(files))
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(h, "package %s %d\n%s", ip, len(sums), sums)
			nfiles += len(files)
			npkgs++
		}
		fmt.Fprintf(&b, "sources=%x (%d files in %d local packages)\n", h.Sum(nil), nfiles, npkgs)
		res[s.name] = memoEntry{Key: hashString(b.String()), Inputs: b.String()}
	}
	return res, nil
}

// hashFiles returns one "sha256 name" line per file of dir.
func hashFiles(dir string, names []string) (string, error) {
	var b strings.Builder
	for _, n := range names {
		sum, err := fileHash(filepath.Join(dir, n))
		if err != nil {
			return "", fmt.Errorf("images: hashing %s: %w", filepath.Join(dir, n), err)
		}
		fmt.Fprintf(&b, "%s %s\n", sum, n)
	}
	return b.String(), nil
}

// treeHash hashes every file of the module that could matter to a build,
// only to memoize `go list`: everything (any file can be go:embed'ed) except
// .git, directories the go command ignores (., _ prefixes, testdata),
// _test.go files and the top-level bin/ of `make build`. The tree is a few
// MB, so this costs milliseconds.
func treeHash(src string) (string, error) {
	h := sha256.New()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil || rel == "." {
			return err
		}
		base := d.Name()
		if d.IsDir() {
			if strings.HasPrefix(base, ".") || strings.HasPrefix(base, "_") || base == "testdata" || rel == "bin" {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(base, "_test.go") {
			return nil
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "l %q %q\n", rel, target)
		case d.Type().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			// Length-prefixed so that bytes cannot move between files unnoticed.
			fmt.Fprintf(h, "f %q %d\n", rel, len(data))
			h.Write(data)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("images: hashing the source tree %s: %w", src, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeFileAtomic writes v as JSON via a temporary file and a rename, so a
// reader never sees half a file.
func writeFileAtomic(p string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), p); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}
