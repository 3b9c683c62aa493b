package testbed

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/afero/af-conn/internal/inns"
	"github.com/vishvananda/netns"
)

// NS is one named network namespace (/run/netns/NAME).
type NS struct {
	Name string
	// Env is added to the environment of the commands run inside (Command).
	Env []string
}

func newNS(name string) (*NS, error) {
	if err := runIP("netns", "add", name); err != nil {
		return nil, err
	}
	return &NS{Name: name}, nil
}

// remove kills every process still in the namespace, then deletes it.
func (n *NS) remove() error {
	if out, err := exec.Command("ip", "netns", "pids", n.Name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			// Our own pid is listed while our main thread is inside (NS.Do ran on
			// it): never kill ourselves.
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if err := runIP("netns", "del", n.Name); err != nil && !strings.Contains(err.Error(), "No such file") {
		return err
	}
	return nil
}

// IP runs `ip` commands inside the namespace, one batch line each.
func (n *NS) IP(lines ...string) error {
	cmd := exec.Command("ip", "-n", n.Name, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testbed: ip -n %s -batch [%s]: %v: %s", n.Name, strings.Join(lines, "; "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Sysctl sets a sysctl inside the namespace.
func (n *NS) Sysctl(key, value string) error {
	return n.Do(func() error {
		path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("testbed: sysctl %s in %s: %w", key, n.Name, err)
		}
		return nil
	})
}

// Do runs f on an OS thread that has entered the namespace. Sockets f creates stay in the
// namespace after Do returns, so servers can Listen inside Do and serve from any goroutine.
// Goroutines f starts do NOT run in the namespace.
func (n *NS) Do(f func() error) error {
	h, err := netns.GetFromName(n.Name)
	if err != nil {
		return fmt.Errorf("testbed: open netns %s: %w", n.Name, err)
	}
	defer h.Close()
	if err := inns.Do(h, f); err != nil {
		return fmt.Errorf("testbed: in netns %s: %w", n.Name, err)
	}
	return nil
}

// Listen opens a listener inside the namespace.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacket opens a packet socket inside the namespace.
func (n *NS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.Do(func() (err error) {
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

// Dial connects from inside the namespace.
func (n *NS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// DialVia connects from inside the namespace with the socket bound to interface dev
// (SO_BINDTODEVICE, as connmgr's probes are), or unbound with dev "".
func (n *NS) DialVia(ctx context.Context, dev, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		d := net.Dialer{Control: bindControl(dev)}
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// bindControl binds a socket to interface dev before it connects; nil for dev "".
func bindControl(dev string) func(string, string, syscall.RawConn) error {
	if dev == "" {
		return nil
	}
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, dev)
		}); err != nil {
			return err
		}
		return serr
	}
}

// Command prepares a command that runs inside the namespace (`ip netns exec`, which also
// bind-mounts /etc/netns/NAME/* over /etc).
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	if len(n.Env) > 0 {
		cmd.Env = append(os.Environ(), n.Env...)
	}
	return cmd
}

// Run runs a command inside the namespace and returns its combined output.
func (n *NS) Run(name string, args ...string) (string, error) {
	out, err := n.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("testbed: %s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Nft loads an nft script inside the namespace.
func (n *NS) Nft(script string) error {
	cmd := n.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testbed: nft in %s: %v: %s\nscript:\n%s", n.Name, err, bytes.TrimSpace(out), script)
	}
	return nil
}

func runIP(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("testbed: ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
