// Package config owns connmgr's configuration model: it reads the UCI files
// `network` (which device each uplink uses, its metric and DNS servers),
// `wireless` (the Wi-Fi station interface, and the access-point interfaces
// that are not uplinks) and connmgr's own `connmgr`, applies defaults,
// validates every value, and returns one immutable Config or one error
// naming the file, line, section, option and value.
//
// Every connmgr option is one row of the option table in options.go; the
// README's configuration table is generated from Options().
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/afero/af-conn/internal/logline"
	"github.com/afero/af-conn/internal/uci"
)

// DefaultUCI is the built-in connmgr configuration, used when the UCI
// directory has no `connmgr` file; the package installs the same text as
// /etc/config/connmgr.
//
//go:embed default.uci
var DefaultUCI string

// DefaultSource names the built-in configuration in errors and logs.
const DefaultSource = "(built-in connmgr defaults)"

// Kind is an uplink's medium, numbered as attribute 65008 (Network Type)
// numbers them.
type Kind int

const (
	KindEthernet Kind = 0
	KindWiFi     Kind = 1
	KindCellular Kind = 2
)

var kindNames = []string{"ethernet", "wifi", "cellular"}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Config is one complete, validated configuration.
type Config struct {
	Main    Main
	Uplinks []Uplink // sorted by priority (then kind)
	AP      []AP     // access-point networks: not uplinks, forwarded when the firewall is on
	// Warnings are things worth logging that did not stop loading
	// (unknown options, ignored sections).
	Warnings []string
	// Sources says, for the log, where each part came from.
	Sources []string
}

// Main is `config connmgr 'main'`; see Options() for each field's option.
type Main struct {
	Firewall              bool
	FirewallBackend       string // auto, nftables or iptables
	EchoHost              string // host name or address literal
	EchoPort              uint16
	Probe                 string // echo, icmp or http
	ProbeURL              string
	ProbeTimeout          time.Duration
	ProbeInterval         time.Duration
	ProbeIntervalStandby  time.Duration
	ProbeIntervalFailing  time.Duration
	CellularProbeInterval time.Duration
	FailCount             int
	RecoverCount          int
	DNSHold               bool
	DNSGrace              time.Duration
	DNSMinTTL             time.Duration
	SetMaxElem            int
	DNSReplyMaxAddrs      int
	DNSNameMaxAddrs       int
	TrustedResolvers      []netip.Addr // list trusted_resolver
	QueueNum              uint16
	KeepRoute             bool
	LogLevel              logline.Level
}

// Uplink is one uplink: a UCI network (Name, e.g. ethnet) on a device.
type Uplink struct {
	Name          string
	Device        string
	Kind          Kind
	Priority      int           // lower is preferred
	ProbeInterval time.Duration // active-probe interval while in use
	Metric        int           // the network's metric (netifd's default route)
	DNS           []netip.Addr  // the network's static DNS servers (list dns)
	Enabled       bool
	// ProbeBudget and ProbeBudgetStandby are bytes per hour of routine
	// probe rounds while in use and while not (0: none).
	ProbeBudget, ProbeBudgetStandby float64
	MonthlyLimit                    uint64 // bytes in and out per calendar month; 0: none
	LimitAction                     string // last_resort or off
}

// AP is one access-point network: the Wi-Fi interfaces in mode 'ap' on
// UCI network Network, and the bridge that network uses.
type AP struct {
	Network string   // e.g. apnet
	Bridge  string   // e.g. br-apnet; "" when the network is not bridged
	Devices []string // e.g. wlan0-1 (interfaces with an explicit ifname)
}

// Interfaces are the interfaces AP clients' traffic arrives on: the
// bridge, or the Wi-Fi interfaces themselves when there is none.
func (a AP) Interfaces() []string {
	if a.Bridge != "" {
		return []string{a.Bridge}
	}
	return append([]string(nil), a.Devices...)
}

// Error is an invalid value, or a missing or conflicting one, in a UCI file.
type Error struct {
	File     string
	Line     int
	Section  string // as `uci show` names it: 'main' or '@uplink[0]'
	Option   string // "" for a whole-section problem
	Value    string
	Problem  string // what is wrong; "" means "invalid value 'Value'"
	Expected string // what would be right
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%d: section '%s'", e.File, e.Line, e.Section)
	if e.Option != "" {
		fmt.Fprintf(&b, " option '%s'", e.Option)
	}
	problem := e.Problem
	if problem == "" {
		problem = "invalid value " + quote(e.Value)
	}
	b.WriteString(": " + problem)
	if e.Expected != "" {
		b.WriteString(": expected " + e.Expected)
	}
	return b.String()
}

// quote shows a value as UCI would write it, or Go-quoted when it holds
// bytes a terminal should not print raw.
func quote(v string) string {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] >= 0x7f {
			return fmt.Sprintf("%q", v)
		}
	}
	return uci.Quote(v)
}

// file is one UCI package and the name errors use for it.
type file struct {
	path    string
	pkg     *uci.Package
	missing bool // no such file: pkg is empty
}

// valueErr makes an Error for option o of section s.
func (f file) valueErr(s *uci.Section, o *uci.Option, value, expected string) *Error {
	line := s.Line
	name := ""
	if o != nil {
		line, name = o.Line, o.Name
	}
	return &Error{File: f.path, Line: line, Section: f.pkg.SectionRef(s), Option: name, Value: value, Expected: expected}
}

// Load reads network, wireless and connmgr from the UCI directory uciDir.
// A missing file is not an error: network and wireless then give the
// default devices (eth0, wlan0, wwan0), connmgr the built-in defaults.
// Loading is all or nothing: on any error no Config is returned.
func Load(uciDir string) (*Config, error) {
	st, err := os.Stat(uciDir)
	if err != nil {
		return nil, fmt.Errorf("config directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("config directory %s: not a directory", uciDir)
	}
	c := &Config{}
	var files [3]file
	for i, name := range []string{"network", "wireless", "connmgr"} {
		pkg, err := uci.Load(uciDir, name)
		path := filepath.Join(uciDir, name)
		switch {
		case errors.Is(err, fs.ErrNotExist) && name == "connmgr":
			pkg, err = uci.Parse(DefaultSource, name, strings.NewReader(DefaultUCI))
			path = DefaultSource
			c.Sources = append(c.Sources, DefaultSource)
		case errors.Is(err, fs.ErrNotExist):
			files[i] = file{path: path, pkg: &uci.Package{Name: name}, missing: true}
			c.Sources = append(c.Sources, path+" (missing: defaults)")
			continue
		case err == nil:
			c.Sources = append(c.Sources, path)
		}
		if err != nil {
			return nil, err
		}
		files[i] = file{path: path, pkg: pkg}
	}
	if err := c.build(files[0], files[1], files[2]); err != nil {
		return nil, err
	}
	return c, nil
}

// Default is the configuration of a machine without any UCI file.
func Default() *Config {
	c := &Config{Sources: []string{DefaultSource}}
	pkg, err := uci.Parse(DefaultSource, "connmgr", strings.NewReader(DefaultUCI))
	if err == nil {
		err = c.build(file{"network", &uci.Package{Name: "network"}, true},
			file{"wireless", &uci.Package{Name: "wireless"}, true}, file{DefaultSource, pkg, false})
	}
	if err != nil {
		panic("built-in configuration is invalid: " + err.Error()) // tests prove it is not
	}
	return c
}

func (c *Config) build(network, wireless, connmgr file) error {
	drafts, err := c.loadConnmgr(connmgr)
	if err != nil {
		return err
	}
	if err := c.resolveUplinks(drafts, network, wireless, connmgr); err != nil {
		return err
	}
	c.AP = c.findAP(network, wireless)
	sort.SliceStable(c.Uplinks, func(i, j int) bool {
		a, b := c.Uplinks[i], c.Uplinks[j]
		if a.Priority != b.Priority {
			return a.Priority < b.Priority
		}
		return a.Kind < b.Kind
	})
	return nil
}

// Uplink returns the uplink named name (its UCI network), or nil.
func (c *Config) Uplink(name string) *Uplink {
	for i := range c.Uplinks {
		if c.Uplinks[i].Name == name {
			return &c.Uplinks[i]
		}
	}
	return nil
}
