package controlplane

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// process is a child started in its own process group, with its output in a
// log file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed once the child has exited and been reaped
	err  error         // Wait's result; read only after done is closed
}

// startProcess starts bin in its own process group (so Stop can kill the
// whole group, including any children it forks) with Pdeathsig=SIGKILL (so
// the kernel kills it if the test process dies without running Stop, e.g. on
// a test timeout panic or SIGKILL). The child is deliberately not tied to a
// context: callers often pass a context that ends long before Stop.
func startProcess(name, bin string, args []string, logPath string) (*process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %s: log file: %w", name, err)
	}
	// The child inherits its own copy of the descriptor; ours is not needed.
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("controlplane: starting %s (%s): %w", name, bin, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exitErr() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// stop sends SIGTERM to the process group, waits up to grace for the leader
// to exit, then SIGKILLs the group. A process that had already exited is not
// an error: Stop's job is only to make sure nothing is left running.
func (p *process) stop(grace time.Duration) error {
	pgid := p.cmd.Process.Pid // Setpgid: the group id is the leader's pid
	select {
	case <-p.done:
	default:
		if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("controlplane: SIGTERM to %s (pgid %d): %w", p.name, pgid, err)
		}
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	// Kill whatever is left in the group: the leader if it ignored SIGTERM,
	// and any children it forked. ESRCH means nothing is left.
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("controlplane: SIGKILL to %s (pgid %d): %w", p.name, pgid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		return fmt.Errorf("controlplane: %s (pid %d) did not exit after SIGKILL", p.name, pgid)
	}
}
