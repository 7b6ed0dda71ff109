package wan

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
)

// stateDir holds one owner record per live topology, "<prefix>.pid", with
// the owner's pid and process start time (the start time guards against pid
// reuse). It is on /run, so it vanishes at reboot together with /run/netns.
var stateDir = "/run/flowplace/topology"

// generatedPrefixRE matches defaultPrefix's output and recovers the pid for
// namespaces whose owner record is missing.
// GeneratedPrefixStem starts every generated prefix (Config.Prefix empty);
// Sweep(GeneratedPrefixStem) cleans up after any killed run that used one.
const GeneratedPrefixStem = defaultPrefixStem

var generatedPrefixRE = regexp.MustCompile(`^` + defaultPrefixStem + `([0-9]+)x[0-9a-f]+$`)

type owner struct {
	pid   int
	start uint64 // 0: unknown
}

func (o owner) String() string { return fmt.Sprintf("%d %d\n", o.pid, o.start) }

func selfOwner() (owner, error) {
	pid := os.Getpid()
	start, err := procStartTime(pid)
	if err != nil {
		return owner{}, err
	}
	return owner{pid: pid, start: start}, nil
}

// procStartTime returns field 22 of /proc/<pid>/stat (start time in clock
// ticks since boot).
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// comm (field 2) may contain spaces and parentheses; it ends at the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	const startIdx = 22 - 3 // fields after comm start at field 3
	if len(fields) <= startIdx {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(fields))
	}
	return strconv.ParseUint(fields[startIdx], 10, 64)
}

// alive reports whether the process o still runs. Any doubt counts as alive,
// so Sweep never deletes a live topology.
func (o owner) alive() bool {
	start, err := procStartTime(o.pid)
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	return o.start == 0 || o.start == start
}

func parseOwner(b []byte) (owner, error) {
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return owner{}, errors.New("empty owner record")
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return owner{}, fmt.Errorf("bad pid %q in owner record", f[0])
	}
	o := owner{pid: pid}
	if len(f) > 1 {
		if o.start, err = strconv.ParseUint(f[1], 10, 64); err != nil {
			return owner{}, fmt.Errorf("bad start time %q in owner record", f[1])
		}
	}
	return o, nil
}

func statePath(prefix string) string { return filepath.Join(stateDir, prefix+".pid") }

// claimPrefix writes the owner record for prefix, generating a prefix when
// it is empty. O_EXCL makes the record the lock on the prefix.
func claimPrefix(prefix string) (string, string, error) {
	self, err := selfOwner()
	if err != nil {
		return "", "", fmt.Errorf("read own start time: %w", err)
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return "", "", fmt.Errorf("create state dir: %w", err)
	}
	generate := prefix == ""
	for attempt := 0; ; attempt++ {
		if generate {
			prefix = defaultPrefix()
		}
		path := statePath(prefix)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			if generate && attempt < 16 {
				continue
			}
			if b, rerr := os.ReadFile(path); rerr == nil {
				if o, perr := parseOwner(b); perr == nil {
					return "", "", fmt.Errorf("prefix %q is in use by pid %d (if that process is gone, Sweep(%q) cleans up)", prefix, o.pid, prefix)
				}
			}
			return "", "", fmt.Errorf("prefix %q is in use (%s exists)", prefix, path)
		}
		if err != nil {
			return "", "", fmt.Errorf("write owner record: %w", err)
		}
		// Namespace names must not collide either (e.g. a leftover from a
		// topology whose record was removed by hand).
		if m, _ := filepath.Glob(filepath.Join(netnsRunDir, prefix+"-*")); len(m) > 0 {
			f.Close()
			os.Remove(path)
			if generate && attempt < 16 {
				continue
			}
			return "", "", fmt.Errorf("prefix %q: namespaces %v already exist", prefix, m)
		}
		_, werr := f.WriteString(self.String())
		cerr := f.Close()
		if err := errors.Join(werr, cerr); err != nil {
			os.Remove(path)
			return "", "", fmt.Errorf("write owner record: %w", err)
		}
		return prefix, path, nil
	}
}

// Sweep deletes the namespaces of topologies whose prefix starts with prefix
// and whose owning process is gone, e.g. after a test run was killed. A
// topology's owner comes from its record under /run/flowplace/topology or,
// without one, from the pid in a generated "fpt<pid>x…" prefix; namespaces
// whose owner cannot be determined, or is alive, are left alone. Sweep("fpt")
// covers every generated prefix.
func Sweep(prefix string) error {
	var errs []error
	sweptPrefixes := map[string]bool{}

	entries, err := os.ReadDir(stateDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("sweep: read %s: %w", stateDir, err))
	}
	recorded := map[string]bool{}
	for _, e := range entries {
		tp, ok := strings.CutSuffix(e.Name(), ".pid")
		if !ok || !strings.HasPrefix(tp, prefix) {
			continue
		}
		recorded[tp] = true
		b, err := os.ReadFile(filepath.Join(stateDir, e.Name()))
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) { // raced with its owner's Close
				errs = append(errs, fmt.Errorf("sweep %s: %w", tp, err))
			}
			continue
		}
		o, err := parseOwner(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("sweep %s: %w (left alone)", tp, err))
			continue
		}
		if o.alive() {
			continue
		}
		sweptPrefixes[tp] = true
	}

	nsEntries, err := os.ReadDir(netnsRunDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("sweep: read %s: %w", netnsRunDir, err))
	}
	failed := map[string]bool{}
	deadPrefixes := map[string]bool{}
	for tp := range sweptPrefixes {
		deadPrefixes[tp] = true
	}
	for _, e := range nsEntries {
		tp, _, ok := strings.Cut(e.Name(), "-")
		if !ok || !strings.HasPrefix(tp, prefix) {
			continue
		}
		if !sweptPrefixes[tp] {
			if recorded[tp] {
				continue
			}
			m := generatedPrefixRE.FindStringSubmatch(tp)
			if m == nil {
				continue // unknown owner: not ours to judge
			}
			pid, err := strconv.Atoi(m[1])
			if err != nil || (owner{pid: pid}).alive() {
				continue
			}
		}
		deadPrefixes[tp] = true
		if err := deleteNamedNetNS(e.Name()); err != nil {
			errs = append(errs, fmt.Errorf("sweep: %w", err))
			failed[tp] = true
		}
	}
	// Devices in this namespace: the management bridge and the nodes' veth
	// ends, named after the prefix's hash.
	links, err := netlink.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("sweep: list links: %w", err))
	}
	for _, l := range links {
		name := l.Attrs().Name
		for tp := range deadPrefixes {
			if strings.HasPrefix(name, hostLinkStem(tp)) {
				if err := deleteHostLink(name); err != nil {
					errs = append(errs, fmt.Errorf("sweep: %w", err))
					failed[tp] = true
				}
			}
		}
	}
	for tp := range sweptPrefixes {
		if failed[tp] {
			continue // keep the record so a later Sweep retries
		}
		if err := os.Remove(statePath(tp)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("sweep %s: remove owner record: %w", tp, err))
		}
	}
	return errors.Join(errs...)
}
