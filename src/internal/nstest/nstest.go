// Package nstest gives root tests a throwaway network namespace: created
// with a unique name, entered only by the goroutine that asks, and always
// removed. Tests skip when not root. It touches nothing in the host's own
// namespace.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// NS is one network namespace made for a test.
type NS struct {
	Name string
}

// New makes a fresh namespace with loopback up and registers its removal.
func New(t testing.TB) *NS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	ns := &NS{Name: fmt.Sprintf("afdns-%d-%s", os.Getpid(), hex.EncodeToString(r[:]))}
	if out, err := exec.Command("ip", "netns", "add", ns.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns.Name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns.Name, err, out)
		}
	})
	ns.Run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Run runs a command inside the namespace and fails the test on error.
func (n *NS) Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.Try(args...)
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	return out
}

// Try runs a command inside the namespace and returns its output.
func (n *NS) Try(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%v: %s", err, out)
	}
	return string(out), nil
}

// Do runs fn on an OS thread that has entered the namespace, so sockets fn
// creates live there (they stay there when used from other threads). The
// thread is thrown away if it cannot return to its own namespace.
func (n *NS) Do(t testing.TB, fn func()) {
	t.Helper()
	if err := n.Enter(fn); err != nil {
		t.Fatal(err)
	}
}

// Enter is Do that returns errors instead of failing a test.
func (n *NS) Enter(fn func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + n.Name)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.Name, err)
			return
		}
		var perr any
		func() {
			defer func() { perr = recover() }()
			fn()
		}()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		if perr != nil {
			errc <- fmt.Errorf("panic in namespace %s: %v", n.Name, perr)
			return
		}
		errc <- nil
	}()
	return <-errc
}

// Veth connects a and b with a veth pair named ifA (in a) and ifB (in b),
// gives each end its addresses (CIDR strings) and sets both up. It returns
// the interface index of ifA inside a.
func Veth(t testing.TB, a *NS, ifA string, addrsA []string, b *NS, ifB string, addrsB []string) int {
	t.Helper()
	if out, err := exec.Command("ip", "link", "add", ifA, "netns", a.Name, "type", "veth", "peer", "name", ifB, "netns", b.Name).CombinedOutput(); err != nil {
		t.Fatalf("veth %s/%s: %v: %s", ifA, ifB, err, out)
	}
	for _, side := range []struct {
		ns    *NS
		ifc   string
		addrs []string
	}{{a, ifA, addrsA}, {b, ifB, addrsB}} {
		for _, ad := range side.addrs {
			side.ns.Run(t, "ip", "addr", "add", ad, "dev", side.ifc, "nodad")
		}
		side.ns.Run(t, "ip", "link", "set", side.ifc, "up")
	}
	var idx int
	a.Do(t, func() {
		if ifi, err := net.InterfaceByName(ifA); err == nil {
			idx = ifi.Index
		}
	})
	if idx == 0 {
		t.Fatalf("no interface %s in %s", ifA, a.Name)
	}
	return idx
}
