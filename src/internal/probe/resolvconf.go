package probe

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// Default places an uplink's DNS servers are read from when netifd's ubus
// status has none.
const (
	AutoResolvConf = "/tmp/resolv.conf.d/resolv.conf.auto"
	EtcResolvConf  = "/etc/resolv.conf"
)

// DNSSource finds an uplink's DNS servers: netifd over ubus when it
// answers, else netifd's resolv.conf.auto section for the interface, else
// /etc/resolv.conf.
type DNSSource struct {
	// Ubus, if set, asks netifd (network.interface.NAME status).
	Ubus     func(iface string) ([]netip.Addr, error)
	AutoPath string // default AutoResolvConf
	EtcPath  string // default EtcResolvConf
}

// Servers returns iface's DNS servers (both families) and where they came
// from.
func (s DNSSource) Servers(iface string) ([]netip.Addr, string, error) {
	if s.Ubus != nil {
		if as, err := s.Ubus(iface); err == nil {
			if as = usable(as); len(as) > 0 {
				return as, "netifd", nil
			}
		}
	}
	auto := s.AutoPath
	if auto == "" {
		auto = AutoResolvConf
	}
	if b, err := os.ReadFile(auto); err == nil {
		if as := usable(ParseResolvConf(b, iface)); len(as) > 0 {
			return as, auto, nil
		}
	}
	etc := s.EtcPath
	if etc == "" {
		etc = EtcResolvConf
	}
	b, err := os.ReadFile(etc)
	if err != nil {
		return nil, "", fmt.Errorf("DNS servers of %s: %w", iface, err)
	}
	as := usable(ParseResolvConf(b, ""))
	if len(as) == 0 {
		return nil, "", fmt.Errorf("DNS servers of %s: none usable in %s", iface, etc)
	}
	return as, etc, nil
}

// usable keeps the servers a socket bound to an uplink can reach, of
// either family: loopback (a local dnsmasq) cannot be reached through
// eth0. A link-local IPv6 server is on the uplink's link (Target.DNS).
func usable(as []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range as {
		a = a.Unmap()
		if a.IsValid() && !a.IsLoopback() && !a.IsUnspecified() && !a.IsMulticast() {
			out = append(out, a)
		}
	}
	return out
}

// ParseResolvConf returns the nameserver addresses of a resolv.conf. With
// iface set, only those in netifd's "# Interface IFACE" section count (the
// layout of resolv.conf.auto); with iface empty, all of them.
func ParseResolvConf(b []byte, iface string) []netip.Addr {
	var out []netip.Addr
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "# Interface "); ok {
			section = strings.TrimSpace(rest)
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		if iface != "" && section != iface {
			continue
		}
		// A scoped IPv6 literal (fe80::1%eth0) keeps its zone.
		if a, err := netip.ParseAddr(f[1]); err == nil {
			out = append(out, a)
		}
	}
	return out
}
