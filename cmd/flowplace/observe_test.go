package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/flowplace/flowplace/internal/probe/probetest"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "flowplace-cli-test")
	if err != nil {
		panic(err)
	}
	// Readable by the unprivileged user of TestObserveWithoutPrivilegeSaysWhy.
	if err := os.Chmod(dir, 0o755); err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "flowplace")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		panic("build flowplace: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func runCLI(t *testing.T, cred *syscall.Credential, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runCLIEnv(t, cred, nil, args...)
}

func TestObserveRejectsGarbageOptions(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"observe", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"observe", "--output", "yaml"}, `--output "yaml": must be table or json`},
		{[]string{"observe", "--duration", "soon"}, `invalid argument "soon" for "--duration"`},
		{[]string{"observe", "--duration", "-5s"}, "--duration -5s: must not be negative"},
		{[]string{"observe", "--interval", "1ms"}, "--interval 1ms: must be at least 100ms"},
		{[]string{"observe", "--max-flows", "3"}, "--max-flows 3: must be between 16 and 1048576"},
		{[]string{"observe", "--top", "-1"}, "--top -1: must not be negative"},
		{[]string{"observe", "extra"}, `unknown command "extra"`},
		{[]string{"obsrve"}, `unknown command "obsrve"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			stdout, stderr, code := runCLI(t, nil, tc.args...)
			if code == 0 {
				t.Fatalf("exit code 0; stdout %q", stdout)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q does not say %q", stderr, tc.want)
			}
			if lines := strings.Count(strings.TrimSpace(stderr), "\n") + 1; lines != 1 {
				t.Errorf("want a one-line error, got %d lines: %q", lines, stderr)
			}
			if stdout != "" {
				t.Errorf("nothing belongs on stdout on error, got %q", stdout)
			}
		})
	}
}

func TestObserveWithoutPrivilegeSaysWhy(t *testing.T) {
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		cred = &syscall.Credential{Uid: 65534, Gid: 65534} // nobody
	}
	_, stderr, code := runCLI(t, cred, "observe", "--duration", "1s")
	if code == 0 {
		t.Fatal("observe succeeded without privilege")
	}
	if !strings.Contains(stderr, "missing privilege") || !strings.Contains(stderr, "run as root") {
		t.Errorf("stderr %q does not name the missing privilege", stderr)
	}
	if lines := strings.Count(strings.TrimSpace(stderr), "\n") + 1; lines != 1 {
		t.Errorf("want a one-line reason, got %q", stderr)
	}
}

func TestObserveReportsDestinations(t *testing.T) {
	probetest.RequireKernel(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const payload = 123457
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write(bytes.Repeat([]byte{'x'}, payload))
			c.Close()
		}
	}()

	cmd := exec.Command(binary, "observe", "--duration", "3s", "--interval", "500ms", "--output", "json")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	// The first line means the probes are attached.
	if !sc.Scan() {
		cmd.Wait()
		t.Fatalf("no output; stderr: %s", stderr.String())
	}
	for range 2 {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := io.Copy(io.Discard, c); n != payload {
			t.Fatalf("read %d bytes, want %d", n, payload)
		}
		c.Close()
	}
	var last view
	lines := 1
	for sc.Scan() {
		lines++
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", lines, err, sc.Text())
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("observe: %v; stderr: %s", err, stderr.String())
	}
	// 3 s at 500 ms is 6 ticks plus the final snapshot. A ticker drops a
	// tick only when the loop is a whole interval late, so 4 lines allow a
	// second of stalls (a VM stalls for ms, world/wan.MaxStall), while a
	// command that never refreshes prints 2.
	if lines < 4 {
		t.Errorf("want a snapshot per 500ms over 3s, got %d lines", lines)
	}
	var out, in *destination
	for i := range last.Destinations {
		d := &last.Destinations[i]
		if d.Address == ln.Addr().String() {
			if d.Direction == "out" {
				out = d
			} else {
				in = d
			}
		}
	}
	if out == nil || in == nil {
		t.Fatalf("destination %s missing from %+v", ln.Addr(), last.Destinations)
	}
	if out.Connections != 2 || out.BytesIn != 2*payload || out.BytesOut != 0 || out.Active != 0 {
		t.Errorf("outbound row %+v: want 2 connections, %d bytes in", *out, 2*payload)
	}
	if in.Connections != 2 || in.BytesOut != 2*payload {
		t.Errorf("inbound row %+v: want 2 connections, %d bytes out", *in, 2*payload)
	}
	if out.RTTSamples == 0 || out.RTTP50Micros <= 0 || out.RTTP99Micros < out.RTTP50Micros || out.RTTMinMicros <= 0 {
		t.Errorf("outbound RTT implausible: %+v", *out)
	}
	if last.Datapath.MaxFlows != 4096 {
		t.Errorf("datapath counters missing: %+v", last.Datapath)
	}
}

func TestObserveTableOutput(t *testing.T) {
	probetest.RequireKernel(t)
	stdout, stderr, code := runCLI(t, nil, "observe", "--duration", "300ms", "--interval", "100ms")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"flowplace observe", "DESTINATION", "CONNS", "BYTES OUT", "RTT P99"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}
}
