// Package nstest is a test helper owning throwaway network namespaces for
// root tests of the OS-touching packages (netmon, route, probe, capture):
// each namespace has a unique name, is set up with ordinary `ip` commands
// and is always removed when the test ends. Nothing here touches the
// host's own namespace.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is one network namespace.
type NS struct {
	Name   string
	Handle netns.NsHandle  // open handle on the namespace
	NL     *netlink.Handle // netlink handle inside the namespace
	t      testing.TB
}

// SkipUnlessRoot skips the test with a clear message when not root.
func SkipUnlessRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
}

// New creates a fresh namespace with loopback up; it is removed at cleanup.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	SkipUnlessRoot(t)
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("afc-%s-%d-%s", prefix, os.Getpid(), hex.EncodeToString(b[:]))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	n := &NS{Name: name, t: t}
	t.Cleanup(func() {
		if n.NL != nil {
			n.NL.Close()
		}
		if n.Handle.IsOpen() {
			n.Handle.Close()
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open namespace %s: %v", name, err)
	}
	n.Handle = h
	if n.NL, err = netlink.NewHandleAt(h, unix.NETLINK_ROUTE); err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	n.IP("link", "set", "lo", "up")
	return n
}

// IP runs `ip ARGS...` inside the namespace and fails the test on error.
func (n *NS) IP(args ...string) string {
	n.t.Helper()
	return n.Exec(append([]string{"ip"}, args...)...)
}

// Exec runs a command inside the namespace and fails the test on error.
func (n *NS) Exec(args ...string) string {
	n.t.Helper()
	out, err := n.Command(args...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("in %s: %s: %v: %s", n.Name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Command returns a command that runs inside the namespace.
func (n *NS) Command(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Do runs fn on a locked OS thread switched into the namespace; sockets
// fn creates live in the namespace.
func (n *NS) Do(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("get current namespace: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(n.Handle); err != nil {
		return fmt.Errorf("enter namespace %s: %w", n.Name, err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// The thread is in the wrong namespace: never reuse it.
			panic(fmt.Sprintf("return from namespace %s: %v", n.Name, err))
		}
	}()
	return fn()
}

// Veth creates a veth pair with one end in a and the other in b.
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	a.IP("link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
}
