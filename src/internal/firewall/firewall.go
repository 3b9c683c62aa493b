// Package firewall owns connmgr's lock-down of the uplinks: the policy of
// DESIGN.md §6 (only DNS, DHCP, NTP, ICMP echo, the whitelist and replies pass
// on the uplinks), the kernel sets that hold the whitelisted addresses, the
// optional NFQUEUE hook for DNS replies, and the record of learned addresses
// that lets connmgr restore everything after someone flushed the firewall.
//
// Two backends implement the same Backend interface: NFT (native nftables
// over netlink, its own table "inet afconn", default where fw4 runs) and IPT
// (iptables chains set up through go-iptables, per-address pinholes in kernel
// ip sets changed over netlink, for fw3 systems). No backend forks a process
// for a per-address change. Firewall wraps a Backend with the record.
package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// The chain names of the seed design (DESIGN.md §6). Both backends create
// exactly these regular chains.
const (
	ChainServiceInput   = "AFERO_ALLOW_SERVICE_INPUT"
	ChainServiceOutput  = "AFERO_ALLOW_SERVICE_OUTPUT"
	ChainWhitelistIn    = "AFERO_ALLOW_WHITELIST_INPUT"
	ChainWhitelistOut   = "AFERO_ALLOW_WHITELIST_OUTPUT"
	ChainForwardService = "AFERO_FORWARD_ACCEPT_SERVICE"
	ChainForwardWL      = "AFERO_FORWARD_WHITELIST"
)

// Chains lists the six regular chains in a fixed order.
var Chains = []string{
	ChainServiceInput, ChainServiceOutput,
	ChainWhitelistIn, ChainWhitelistOut,
	ChainForwardService, ChainForwardWL,
}

// Set roles. Each backend maps a role and an address family to one kernel
// set (nft: "allow4" in table inet afconn; ipset: "afconn_allow4").
const (
	SetAllow   = "allow"  // learned addresses the device itself may reach
	SetForward = "fwd"    // learned addresses LAN clients may reach (forwarding)
	SetStatic  = "static" // static whitelist addresses and prefixes, permanent
)

// Backend names, as the config option firewall_backend spells them.
const (
	BackendAuto     = "auto"
	BackendNFT      = "nftables"
	BackendIPTables = "iptables"
)

// HubDNSMark is the bit of the packet mark the lock-down sets on the host's own DNS queries out
// of the uplinks (its output chain sees only locally made packets; forwarded LAN queries never
// pass it), so that DNS extraction takes them with a capture socket of their own, which a flood
// of LAN queries cannot fill (dnscap.Config.Mark). The other bits are kept; the mark is set in a
// filter chain, so it changes no routing decision. Bit 28: clear of mwan3 (0x3f00), pbr and
// Tailscale (0xff0000) and Kubernetes (0xc000).
const HubDNSMark uint32 = 0x10000000

// DefaultMaxElem bounds each learned-address set when the policy says 0.
const DefaultMaxElem = 65536

// MaxTTL is the longest pinhole lifetime a backend accepts; longer TTLs are
// clamped (ipset cannot express more than 2^31/1000 seconds).
const MaxTTL = 7 * 24 * time.Hour

// maxComment bounds the comment stored with a kernel set element.
const maxComment = 128

// Errors callers test with errors.Is.
var (
	// ErrSetFull: a learned-address set reached set_maxelem.
	ErrSetFull = errors.New("whitelist set is full")
	// ErrQueueUnavailable: the policy is in force but DNS replies cannot be
	// queued (neither nft queue nor xt NFQUEUE works): DNS extraction has to
	// fall back to capture-only.
	ErrQueueUnavailable = errors.New("DNS reply queueing unavailable")
	// ErrNotSetUp: the firewall has not been set up (or was torn down).
	ErrNotSetUp = errors.New("firewall not set up")
	// ErrClosed: the backend was closed.
	ErrClosed = errors.New("firewall backend closed")
)

// QueueHook asks that DNS replies arriving on the uplinks (to the device and
// to LAN clients it forwards for) go to NFQUEUE number Num, with bypass so DNS
// keeps working when nobody listens.
type QueueHook struct {
	Enabled bool
	Num     uint16
}

// QueueMode says how the DNS queue hook is implemented.
type QueueMode string

// Queue modes.
const (
	QueueOff         QueueMode = "off"         // not requested
	QueueNative      QueueMode = "nft-queue"   // nft queue expression
	QueueXT          QueueMode = "xt-nfqueue"  // xt NFQUEUE target (nft compat or iptables)
	QueueUnavailable QueueMode = "unavailable" // requested, not possible here
)

// Policy is what Setup installs.
type Policy struct {
	// Uplinks are the devices that are locked down (eth0, wlan0, wwan0).
	// Everything else (LAN, the AP bridge, loopback) is untouched; traffic
	// forwarded out of an uplink, whatever device it came from, follows the
	// same whitelist as the device's own traffic.
	Uplinks []string
	// Static are permanent whitelist entries (addresses as /32 or /128).
	Static []netip.Prefix
	// MaxElem bounds each learned-address set (0: DefaultMaxElem).
	MaxElem int
	// DNSQueue optionally hooks DNS replies into an NFQUEUE.
	DNSQueue QueueHook
}

// Normalize validates p and returns a copy with defaults applied, uplinks
// de-duplicated and sorted, and static prefixes masked, de-duplicated and
// sorted, so that equal policies compare equal.
func (p Policy) Normalize() (Policy, error) {
	out := Policy{MaxElem: p.MaxElem, DNSQueue: p.DNSQueue}
	if out.MaxElem == 0 {
		out.MaxElem = DefaultMaxElem
	}
	if out.MaxElem < 1 || out.MaxElem > 1<<24 {
		return Policy{}, fmt.Errorf("policy: set_maxelem %d out of range 1..%d", p.MaxElem, 1<<24)
	}
	for _, dev := range p.Uplinks {
		if err := CheckIfname(dev); err != nil {
			return Policy{}, fmt.Errorf("policy: uplink %q: %w", dev, err)
		}
		if !slices.Contains(out.Uplinks, dev) {
			out.Uplinks = append(out.Uplinks, dev)
		}
	}
	slices.Sort(out.Uplinks)
	for _, pfx := range p.Static {
		if !pfx.IsValid() {
			return Policy{}, fmt.Errorf("policy: invalid static whitelist prefix %v", pfx)
		}
		if pfx.Addr().Is4In6() {
			pfx = netip.PrefixFrom(pfx.Addr().Unmap(), max(pfx.Bits()-96, 0))
		}
		if pfx.Bits() == 0 {
			return Policy{}, fmt.Errorf("policy: static whitelist prefix %v would open everything", pfx)
		}
		pfx = pfx.Masked()
		if !slices.Contains(out.Static, pfx) {
			out.Static = append(out.Static, pfx)
		}
	}
	slices.SortFunc(out.Static, comparePrefix)
	return out, nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// CheckIfname accepts what the kernel accepts as a link name (dev_valid_name)
// and rejects iptables-style wildcards, which the nft backend cannot express.
func CheckIfname(s string) error {
	switch {
	case s == "" || len(s) > 15:
		return errors.New("device name must be 1 to 15 bytes")
	case s == "." || s == "..":
		return errors.New("not a device name")
	case strings.ContainsAny(s, "/:+*\x00") || strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		return errors.New("device name contains a character not allowed (white space, / : + * or control)")
	}
	return nil
}

// Pinhole is one whitelisted address.
type Pinhole struct {
	Addr netip.Addr
	// TTL is how long the address stays; 0 means permanent.
	TTL time.Duration
	// Forward: the address is opened for LAN clients (forwarding) instead of
	// for the device itself.
	Forward bool
	// Comment is kept with the kernel element (host name, who added it).
	Comment string
}

// normalize validates the address and clamps TTL and comment.
func (p Pinhole) normalize() (Pinhole, error) {
	if !p.Addr.IsValid() {
		return p, errors.New("invalid address")
	}
	p.Addr = p.Addr.Unmap().WithZone("")
	if p.Addr.IsUnspecified() {
		return p, fmt.Errorf("%v: unspecified address cannot be whitelisted", p.Addr)
	}
	if p.TTL < 0 {
		return p, fmt.Errorf("%v: negative TTL %v", p.Addr, p.TTL)
	}
	if p.TTL > MaxTTL {
		p.TTL = MaxTTL
	}
	if len(p.Comment) > maxComment {
		p.Comment = p.Comment[:maxComment]
	}
	return p, nil
}

// role returns the set role of a pinhole.
func (p Pinhole) role() string {
	if p.Forward {
		return SetForward
	}
	return SetAllow
}

// setName returns the family-qualified set name of a role ("allow4").
func setName(role string, a netip.Addr) string {
	if a.Is4() {
		return role + "4"
	}
	return role + "6"
}

// SetNames lists every set name a backend creates, family-qualified.
var SetNames = []string{"allow4", "allow6", "fwd4", "fwd6", "static4", "static6"}

// Backend is one way of putting the policy into the kernel. Implementations
// are not safe for concurrent use; Firewall serializes calls.
type Backend interface {
	// Name is BackendNFT or BackendIPTables.
	Name() string
	// Setup installs (or re-installs) the policy. It is idempotent: calling it
	// any number of times leaves exactly one copy of every rule, and it keeps
	// the learned sets' elements when the sets already exist and still fit
	// the policy. It returns the queue mode in force; when the hook was
	// requested but is impossible, it installs the rest and returns
	// QueueUnavailable with an error wrapping ErrQueueUnavailable.
	Setup(p Policy) (QueueMode, error)
	// Add puts pinholes into the kernel sets as one change where the backend
	// can (one netlink batch for nft). An address already present gets the
	// new timeout (or becomes permanent). A full set yields ErrSetFull.
	Add(ps []Pinhole) error
	// Fill puts recorded pinholes back: what is missing is added with its
	// lifetime, what is there keeps its own (which the record's never
	// exceeds: every change went through Add). It costs a third of Add on
	// nftables, where a restore after a flush spends its time.
	Fill(ps []Pinhole) error
	// Del removes pinholes; absent ones are not an error.
	Del(ps []Pinhole) error
	// Check returns nil when every chain, rule, jump and set of the policy is
	// in place, else an error saying what is missing.
	Check() error
	// Teardown removes everything this backend ever added and nothing else.
	Teardown() error
	// Counts returns the number of elements per set name (SetNames).
	Counts() (map[string]int, error)
	// Close releases sockets; kernel state stays.
	Close() error
}

// uplinkSetter is implemented by backends that can change the locked-down
// devices alone: no set is touched, so nothing learned has to be put back
// (following netifd's layer-3 device must not cost a restore of 65,536
// addresses).
type uplinkSetter interface {
	// setUplinks makes p.Uplinks the locked-down devices; p is otherwise
	// the policy in force. ErrNotSetUp when Setup has not run.
	setUplinks(p Policy) error
}

// maxElemNote says the bound in a set-full error when it is known.
func maxElemNote(n int) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf(" (set_maxelem %d)", n)
}
