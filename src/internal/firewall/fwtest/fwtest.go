// Package fwtest gives tests throwaway network namespaces and firewall
// backends working inside them, so that the firewall's own tests, the DNS
// extraction tests and the end-to-end tests can exercise real kernel state
// without touching the host's namespace. Everything it makes is removed by
// t.Cleanup, also when the test fails.
package fwtest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/firewall"
)

// NeedRoot skips the test when it cannot create namespaces.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, netfilter)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2)")
	}
}

// NS is a named network namespace ("ip netns" style, so that `ip netns exec
// NAME` works for commands too) with its loopback up.
type NS struct {
	Name string
	fd   int
}

// NewNS creates a namespace named prefix-PID-RANDOM and removes it at
// cleanup. prefix should be short: interface-name-like limits do not apply,
// but keep names readable in `ip netns list`.
func NewNS(t testing.TB, prefix string) *NS {
	t.Helper()
	NeedRoot(t)
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	name := fmt.Sprintf("%s-%d-%s", prefix, os.Getpid(), hex.EncodeToString(rnd[:]))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &NS{Name: name, fd: -1}
	t.Cleanup(func() {
		if ns.fd >= 0 {
			unix.Close(ns.fd)
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open namespace %s: %v", name, err)
	}
	ns.fd = fd
	ns.MustExec(t, "ip", "link", "set", "lo", "up")
	return ns
}

// FD is an open file descriptor of the namespace (for netlink sockets).
func (n *NS) FD() int { return n.fd }

// Run calls fn on an OS thread that has entered the namespace. Sockets fn
// opens and processes it starts live in the namespace. The thread is never
// given back to the Go scheduler: it ends with fn, so no other goroutine
// ever runs in the namespace by accident.
func (n *NS) Run(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // deliberately never unlocked
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", n.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Exec runs a command inside the namespace and returns its combined output.
func (n *NS) Exec(name string, args ...string) (string, error) {
	var out []byte
	err := n.Run(func() error {
		var err error
		out, err = exec.Command(name, args...).CombinedOutput()
		return err
	})
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, out)
	}
	return string(out), nil
}

// MustExec is Exec that fails the test on error.
func (n *NS) MustExec(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Exec(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Kinds are the backends a suite runs over. iptables-legacy is included
// when its binaries exist.
func Kinds() []string {
	kinds := []string{"nftables", "iptables"}
	if _, err := exec.LookPath("iptables-legacy"); err == nil {
		if _, err := exec.LookPath("ip6tables-legacy"); err == nil {
			kinds = append(kinds, "iptables-legacy")
		}
	}
	return kinds
}

// NewBackend returns a backend of the given kind ("nftables", "iptables",
// "iptables-legacy") working inside ns, torn down and closed at cleanup.
func NewBackend(t testing.TB, ns *NS, kind string) firewall.Backend {
	t.Helper()
	var (
		b   firewall.Backend
		err error
	)
	switch kind {
	case "nftables":
		b, err = firewall.NewNFT(firewall.NFTNetNS(ns.FD()))
	case "iptables", "iptables-legacy":
		opts := []firewall.IPTOption{firewall.IPTNetNS(ns.FD(), ns.Run)}
		if kind == "iptables-legacy" {
			opts = append(opts, firewall.IPTBinaries("iptables-legacy", "ip6tables-legacy"))
		}
		b, err = firewall.NewIPT(opts...)
	default:
		t.Fatalf("unknown backend kind %q", kind)
	}
	if err != nil {
		t.Fatalf("new %s backend in %s: %v", kind, ns.Name, err)
	}
	t.Cleanup(func() {
		if err := b.Teardown(); err != nil {
			t.Errorf("teardown %s: %v", kind, err)
		}
		b.Close()
	})
	return b
}
