package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// startTimeout bounds how long a server may take to say it is ready.
const startTimeout = 30 * time.Second

// proc is a server process of a system under test.
type proc struct {
	name   string
	addr   string
	cmd    *exec.Cmd
	stderr *tail
	exited chan struct{} // closed once the process has exited
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// serverProcs, if positive, is the GOMAXPROCS of every server process of
// every system (-procs); 0 leaves Go's default, the machine's cores.
var serverProcs int

// startProc runs exe with args followed by "-listen ADDR" on a free
// loopback address, and waits until the process writes a line containing
// "ready" to its standard error, as every server of the benchmark does when
// it serves.
func startProc(ctx context.Context, name, exe string, args ...string) (*proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, append(args, "-listen", addr)...)
	if serverProcs > 0 {
		cmd.Env = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", serverProcs))
	}
	// A server must not outlive the benchmark, even when it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, addr: addr, cmd: cmd, stderr: &tail{}, exited: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		var once sync.Once
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.stderr.add(sc.Text())
			if strings.Contains(sc.Text(), "ready") {
				once.Do(func() { close(ready) })
			}
		}
		io.Copy(io.Discard, stderr) // what a line too long to scan left
		cmd.Wait()
		close(p.exited)
	}()

	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-ready:
		return p, nil
	case <-p.exited:
		err = fmt.Errorf("%s exited before it was ready (%v); its last output:\n%s", name, cmd.ProcessState, p.stderr)
	case <-timer.C:
		err = fmt.Errorf("%s was not ready within %v; its last output:\n%s", name, startTimeout, p.stderr)
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.stop()
	return nil, err
}

// stop asks the process to end (SIGTERM) and kills it if it has not within
// a few seconds.
func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// cpuTicks returns the CPU time the process has used, user and system, in
// clock ticks (fields 14 and 15 of /proc/PID/stat).
func (p *proc) cpuTicks() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may contain spaces;
	// the fields after it start with field 3.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: cannot parse /proc/%d/stat", p.name, p.cmd.Process.Pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("%s: cannot parse /proc/%d/stat", p.name, p.cmd.Process.Pid)
	}
	utime, err1 := strconv.ParseInt(fields[14-3], 10, 64)
	stime, err2 := strconv.ParseInt(fields[15-3], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("%s: /proc/%d/stat: %w", p.name, p.cmd.Process.Pid, err)
	}
	return utime + stime, nil
}

// peakRSS returns the process's peak resident set size in bytes (VmHWM in
// /proc/PID/status).
func (p *proc) peakRSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("%s: no VmHWM in /proc/%d/status", p.name, p.cmd.Process.Pid)
}

// cpuSeconds returns the CPU time used so far by all of procs.
func cpuSeconds(procs []*proc) (float64, error) {
	var ticks int64
	for _, p := range procs {
		t, err := p.cpuTicks()
		if err != nil {
			return 0, err
		}
		ticks += t
	}
	return float64(ticks) / float64(clockTicks()), nil
}

// clockTicks returns the number of clock ticks per second of /proc's CPU
// times, asking getconf once and assuming Linux's usual 100 if it cannot.
var clockTicks = sync.OnceValue(func() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return 100
	}
	hz, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil || hz <= 0 {
		return 100
	}
	return hz
})

// tail keeps the last lines a process wrote, to explain its failures.
type tail struct {
	mu    sync.Mutex
	lines []string
}

const tailLines = 20

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == tailLines {
		t.lines = append(t.lines[:0], t.lines[1:]...)
	}
	t.lines = append(t.lines, line)
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return "\t" + strings.Join(t.lines, "\n\t")
}
