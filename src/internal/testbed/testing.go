package testbed

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// New builds a world for a test and removes it when the test ends. Without root the test is
// skipped, except under CI (CI=true), where a skipped end-to-end suite would hide a broken
// set-up, so it fails.
func New(t testing.TB, opt Options) *World {
	t.Helper()
	RequireRoot(t)
	w, err := Build(opt)
	if err != nil {
		skipNoRadvd(t, err)
		t.Fatalf("build test world: %v", err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("remove test world: %v", err)
		}
	})
	return w
}

// RequireRoot skips (fails under CI) a test that needs root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root, and CI runs as root: the set-up is broken")
	}
	t.Skip("needs root (network namespaces); run make test as root")
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error

	hooksOnce sync.Once
	hooksBin  string
	hooksErr  error
)

// Connmgr returns the path of a connmgr binary for end-to-end tests: $CONNMGR_BIN when set
// (make test builds it once), else one built now from this checkout, once per test process.
// The build goes to one place per checkout under the temporary directory, replaced by rename,
// so test processes running side by side share it and none leaves a copy behind.
func Connmgr(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("CONNMGR_BIN"); bin != "" {
		return bin
	}
	buildOnce.Do(func() { builtBin, buildErr = buildConnmgr("connmgr") })
	if buildErr != nil {
		t.Fatalf("build connmgr: %v", buildErr)
	}
	return builtBin
}

// ConnmgrWithTestHooks returns a connmgr binary built with -tags connmgr_testhooks, whose
// SIGUSR2 makes the daemon panic (for the crash tests; a production build has no such hook):
// $CONNMGR_TESTHOOKS_BIN when set, else one built now, once per test process.
func ConnmgrWithTestHooks(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("CONNMGR_TESTHOOKS_BIN"); bin != "" {
		return bin
	}
	hooksOnce.Do(func() { hooksBin, hooksErr = buildConnmgr("connmgr-testhooks", "-tags", "connmgr_testhooks") })
	if hooksErr != nil {
		t.Fatalf("build connmgr with test hooks: %v", hooksErr)
	}
	return hooksBin
}

// buildConnmgr builds cmd/connmgr into os.TempDir()/af-conn-test-<checkout hash>/NAME, with
// extra go build flags.
func buildConnmgr(name string, flags ...string) (string, error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot tell where this checkout is")
	}
	sum := sha256.Sum256([]byte(filepath.Dir(self)))
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("af-conn-test-%x", sum[:6]))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, "connmgr-*.tmp")
	if err != nil {
		return "", err
	}
	tmp := f.Name()
	f.Close()
	defer os.Remove(tmp) // gone after the rename; left only by a failed build
	args := append(append([]string{"build"}, flags...), "-o", tmp, "github.com/afero/af-conn/cmd/connmgr")
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", &buildError{err: err, out: strings.TrimSpace(string(out))}
	}
	bin := filepath.Join(dir, name)
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	return bin, nil
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

// StartConnmgr runs the connmgr binary in the device namespace with args and stops it (SIGTERM)
// when the test ends, failing the test if it does not exit cleanly.
func (w *World) StartConnmgr(t testing.TB, args ...string) *Process {
	t.Helper()
	p, err := w.Device.Start(nil, Connmgr(t), args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.exited() {
			return // the test saw it end and judged that itself
		}
		if err := p.Stop(15 * time.Second); err != nil {
			t.Errorf("connmgr did not exit cleanly on SIGTERM: %v\nlog:\n%s", err, p.Log())
		}
	})
	return p
}

// NewNS creates one bare namespace (loopback up) for a package's own root test, with a world's
// lifecycle: swept if its run dies, torn down on SIGINT/SIGTERM, removed when the test ends.
func NewNS(t testing.TB, role string) *NS {
	t.Helper()
	RequireRoot(t)
	sweepStale()
	w := &World{ID: fmt.Sprintf("%s%d-%04x", namePrefix, os.Getpid(), rand.IntN(0x10000))}
	w.unsignal = register(w)
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("remove namespace: %v", err)
		}
	})
	ns, err := w.newNS(role)
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.IP("link set lo up"); err != nil {
		t.Fatal(err)
	}
	return ns
}

// Handle opens a handle on the namespace (for netlink sockets inside it); closed when the
// test ends.
func (n *NS) Handle(t testing.TB) netns.NsHandle {
	t.Helper()
	h, err := netns.GetFromName(n.Name)
	if err != nil {
		t.Fatalf("open namespace %s: %v", n.Name, err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// MustRun runs a command (args[0] and its arguments) inside the namespace and fails the test
// on error.
func (n *NS) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.Run(args[0], args[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// MustDo runs f inside the namespace (see Do) and fails the test if the namespace cannot be
// entered or left.
func (n *NS) MustDo(t testing.TB, f func()) {
	t.Helper()
	if err := n.Do(func() error { f(); return nil }); err != nil {
		t.Fatal(err)
	}
}

// Veth connects a and b with a veth pair named ifA (in a) and ifB (in b), gives each end its
// addresses (CIDR strings, no duplicate address detection) and sets both up. It returns the
// interface index of ifA inside a.
func Veth(t testing.TB, a *NS, ifA string, addrsA []string, b *NS, ifB string, addrsB []string) int {
	t.Helper()
	if err := runIP("link", "add", ifA, "netns", a.Name, "type", "veth", "peer", "name", ifB, "netns", b.Name); err != nil {
		t.Fatal(err)
	}
	for _, side := range []struct {
		ns    *NS
		ifc   string
		addrs []string
	}{{a, ifA, addrsA}, {b, ifB, addrsB}} {
		var lines []string
		for _, ad := range side.addrs {
			lines = append(lines, "addr add "+ad+" dev "+side.ifc+" nodad")
		}
		if err := side.ns.IP(append(lines, "link set "+side.ifc+" up")...); err != nil {
			t.Fatal(err)
		}
	}
	var idx int
	a.MustDo(t, func() {
		if ifi, err := net.InterfaceByName(ifA); err == nil {
			idx = ifi.Index
		}
	})
	if idx == 0 {
		t.Fatalf("no interface %s in %s", ifA, a.Name)
	}
	return idx
}

// ServeHello starts a TCP server in n on addr ("0.0.0.0:8080") that answers every connection
// with one line "hello from ADDR", ADDR being the address it was reached at, and closes it. It
// stops when the test ends.
func (n *NS) ServeHello(t testing.TB, addr string) {
	t.Helper()
	n.serveTCP(t, addr, func(c net.Conn) {
		fmt.Fprintf(c, "hello from %s\n", c.LocalAddr())
		c.Close()
	})
}

// ServeDownload starts a TCP server in n on addr that sends every connection 1400-byte
// segments, one each every (or as fast as it can with every 0), until the connection fails
// or the test ends.
func (n *NS) ServeDownload(t testing.TB, addr string, every time.Duration) {
	t.Helper()
	n.serveTCP(t, addr, func(c net.Conn) {
		go func() {
			defer c.Close()
			buf := make([]byte, 1400)
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
				if every > 0 {
					time.Sleep(every)
				}
			}
		}()
	})
}

// WaitNoTentative waits until no IPv6 address in n is tentative (duplicate address detection
// takes the kernel's own link-local addresses a second), at most timeout.
func (n *NS) WaitNoTentative(t testing.TB, timeout time.Duration) {
	t.Helper()
	for end := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		out, err := n.Run("ip", "-6", "addr", "show", "tentative")
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(out) == "" {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("addresses still tentative in %s after %v: %s", n.Name, timeout, out)
		}
	}
}

// serveTCP listens in n on addr and hands every connection to handle until the test ends.
func (n *NS) serveTCP(t testing.TB, addr string, handle func(net.Conn)) {
	t.Helper()
	ln, err := n.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, n.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			handle(c)
		}
	}()
}
