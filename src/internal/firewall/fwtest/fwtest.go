// Package fwtest gives tests throwaway network namespaces and firewall
// backends working inside them, so that the firewall's own tests, the DNS
// extraction tests and the end-to-end tests can exercise real kernel state
// without touching the host's namespace. Everything it makes is removed by
// t.Cleanup, also when the test fails.
package fwtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/firewall"
	"github.com/afero/af-conn/internal/testbed"
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

// NS is a throwaway named network namespace (testbed's, so that `ip netns
// exec NAME` works for commands too) with a descriptor for netlink sockets.
type NS struct {
	Name string
	ns   *testbed.NS
	fd   int
}

// NewNS creates a namespace with loopback up and removes it at cleanup.
// prefix names the namespace's role.
func NewNS(t testing.TB, prefix string) *NS {
	t.Helper()
	NeedRoot(t)
	n := testbed.NewNS(t, prefix)
	fd, err := unix.Open("/run/netns/"+n.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open namespace %s: %v", n.Name, err)
	}
	t.Cleanup(func() { unix.Close(fd) }) // runs before the namespace is removed
	return &NS{Name: n.Name, ns: n, fd: fd}
}

// FD is an open file descriptor of the namespace (for netlink sockets).
func (n *NS) FD() int { return n.fd }

// Run calls fn on an OS thread that has entered the namespace: sockets fn
// opens and processes it starts live in the namespace.
func (n *NS) Run(fn func() error) error {
	return n.ns.Do(fn)
}

// Exec runs a command inside the namespace and returns its combined output.
func (n *NS) Exec(name string, args ...string) (string, error) {
	return n.ns.Run(name, args...)
}

// MustExec is Exec that fails the test on error.
func (n *NS) MustExec(t testing.TB, name string, args ...string) string {
	t.Helper()
	return n.ns.MustRun(t, append([]string{name}, args...)...)
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
	b := OpenBackend(t, ns, kind)
	t.Cleanup(func() {
		if err := b.Teardown(); err != nil {
			t.Errorf("teardown %s: %v", kind, err)
		}
		b.Close()
	})
	return b
}

// OpenBackend returns a backend of the given kind working inside ns; the
// caller closes it (a restarted daemon's view: no teardown at cleanup).
func OpenBackend(t testing.TB, ns *NS, kind string) firewall.Backend {
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
	return b
}

// Veth connects two namespaces with a veth pair: devA in a (with address
// addrA, CIDR form) and devB in b (addrB).
func Veth(t testing.TB, a *NS, devA, addrA string, b *NS, devB, addrB string) {
	t.Helper()
	testbed.Veth(t, a.ns, devA, []string{addrA}, b.ns, devB, []string{addrB})
}

// Flush does to the namespace what an administrator or a firewall restart
// does to our rules: "nft flush ruleset" for nftables, "iptables -F" and
// "ip6tables -F" (all chains of the filter table) for iptables.
func Flush(t testing.TB, ns *NS, kind string) {
	t.Helper()
	switch kind {
	case "nftables":
		ns.MustExec(t, "nft", "flush", "ruleset")
	case "iptables":
		ns.MustExec(t, "iptables", "-F")
		ns.MustExec(t, "ip6tables", "-F")
	case "iptables-legacy":
		ns.MustExec(t, "iptables-legacy", "-F")
		ns.MustExec(t, "ip6tables-legacy", "-F")
	default:
		t.Fatalf("unknown backend kind %q", kind)
	}
}

var (
	reCounters = regexp.MustCompile(`counter packets \d+ bytes \d+|\[\d+:\d+\]`)
	reExpires  = regexp.MustCompile(` (expires|timeout) [0-9dhms]+`)
)

// Dump returns the whole firewall state of the namespace as text, without
// the parts that change by themselves (packet counters, time left of set
// elements, tool banners), so that two dumps compare equal exactly when
// the rules, chains, sets and set members are the same.
func Dump(t testing.TB, ns *NS) string {
	t.Helper()
	var b strings.Builder
	cmds := [][]string{
		{"nft", "list", "ruleset"},
		{"iptables-legacy-save"}, {"ip6tables-legacy-save"},
		{"ipset", "save"},
	}
	for _, c := range cmds {
		if _, err := exec.LookPath(c[0]); err != nil {
			continue
		}
		out := ns.MustExec(t, c[0], c[1:]...)
		fmt.Fprintf(&b, "== %s\n", strings.Join(c, " "))
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "#") {
				continue
			}
			l = reCounters.ReplaceAllString(l, "")
			l = reExpires.ReplaceAllString(l, "")
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// ListenTCP starts a server in ns on addr ("198.18.0.2:8080") that answers
// every connection with one line "hello from ADDR" and closes; it stops at
// cleanup.
func ListenTCP(t testing.TB, ns *NS, addr string) {
	t.Helper()
	ns.ns.ServeHello(t, addr)
}

// ListenUDP starts a server in ns on addr that echoes every datagram.
func ListenUDP(t testing.TB, ns *NS, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Run(func() error {
		var err error
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen udp %s in %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
}

// DialTCP connects from ns (from the source address src, "" for any) to
// addr and reads the server's greeting; it fails when no greeting comes
// within timeout, which is what a dropped SYN looks like.
func DialTCP(ns *NS, src, addr string, timeout time.Duration) error {
	return ns.Run(func() error {
		d := net.Dialer{Timeout: timeout}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("read greeting from %s: %w", addr, err)
		}
		if !strings.HasPrefix(string(buf[:n]), "hello") {
			return fmt.Errorf("unexpected greeting %q from %s", buf[:n], addr)
		}
		return nil
	})
}

// ExchangeUDP sends one datagram from ns to addr and waits for the echo.
func ExchangeUDP(ns *NS, addr string, timeout time.Duration) error {
	return ns.Run(func() error {
		c, err := net.DialTimeout("udp", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("no answer from %s: %w", addr, err)
		}
		if string(buf[:n]) != "ping" {
			return fmt.Errorf("unexpected answer %q from %s", buf[:n], addr)
		}
		return nil
	})
}
