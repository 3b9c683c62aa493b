package testbed

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a program running inside a namespace whose stderr and stdout are kept as lines.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // set before done closes

	mu    sync.Mutex
	lines []string
	grew  *sync.Cond
	echo  io.Writer
}

// Start runs name with args inside ns. Output lines are kept for WaitLog and copied to echo
// when it is not nil (make run shows the daemon's log this way).
func (n *NS) Start(echo io.Writer, name string, args ...string) (*Process, error) {
	p := &Process{cmd: n.Command(name, args...), done: make(chan struct{}), echo: echo}
	p.grew = sync.NewCond(&p.mu)
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	// Its own process group, so a terminal's Ctrl-C reaches the owner first and the owner
	// decides how to stop it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("testbed: start %s: %w", name, err)
	}
	go p.collect(pr)
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *Process) collect(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.lines = append(p.lines, line)
		if p.echo != nil {
			fmt.Fprintln(p.echo, line)
		}
		p.grew.Broadcast()
		p.mu.Unlock()
	}
	p.mu.Lock()
	p.lines = append(p.lines, "") // wakes waiters at EOF; an empty line matches nothing useful
	p.grew.Broadcast()
	p.mu.Unlock()
}

// Mark returns a position in the log; WaitLogFrom looks only at lines after it.
func (p *Process) Mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// WaitLog waits for a log line matching re, from the start of the log.
func (p *Process) WaitLog(re *regexp.Regexp, timeout time.Duration) (string, error) {
	return p.WaitLogFrom(0, re, timeout)
}

// WaitLogFrom waits for a line after mark that matches re.
func (p *Process) WaitLogFrom(mark int, re *regexp.Regexp, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		p.mu.Lock()
		p.grew.Broadcast()
		p.mu.Unlock()
	})
	defer timer.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := mark; ; {
		for ; i < len(p.lines); i++ {
			if re.MatchString(p.lines[i]) {
				return p.lines[i], nil
			}
		}
		select {
		case <-p.done:
			if i >= len(p.lines) {
				return "", fmt.Errorf("process exited (%v) before a log line matched %q; log:\n%s", p.err, re, strings.Join(p.lines, "\n"))
			}
			continue
		default:
		}
		if !time.Now().Before(deadline) {
			return "", fmt.Errorf("no log line matched %q within %v; log:\n%s", re, timeout, strings.Join(p.lines, "\n"))
		}
		p.grew.Wait()
	}
}

// Log returns everything the process printed so far.
func (p *Process) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Pid is the process id of `ip netns exec`, which execs the program itself.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits for the process to exit, at most timeout, and returns its exit error.
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("testbed: process %d still running after %v", p.Pid(), timeout)
	}
}

// Stop sends SIGTERM, waits up to timeout, then kills. It returns the exit error of a
// process that stopped on SIGTERM, so callers can check for a clean exit.
func (p *Process) Stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	p.Signal(syscall.SIGTERM)
	if err := p.Wait(timeout); err == nil || p.exited() {
		return err
	}
	p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("testbed: process %d ignored SIGTERM for %v and was killed", p.Pid(), timeout)
}

func (p *Process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}
