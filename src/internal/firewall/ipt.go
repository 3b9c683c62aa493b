//go:build !noiptables

package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/firewall/ipset"
)

// IPT is the iptables backend for fw3 systems: the six chains in the filter
// table of iptables and ip6tables, jumped to from INPUT, OUTPUT and FORWARD,
// with the addresses in kernel ip sets that are changed over netlink.
// Setting up runs iptables (through go-iptables); adding or removing
// addresses never does.
type IPT struct {
	bin4, bin6 string
	run        func(func() error) error // runs iptables calls (in a namespace for tests)
	nsfd       int
	ipt4, ipt6 *iptables.IPTables // ipt6 nil: the kernel has no IPv6
	sets       *ipset.Conn
	want       map[bool]iptPolicy // v6 -> installed policy
	maxElem    int
	queue      bool
	// onNFT says the installed rules live in nf_tables (iptables-nft), whose deletions
	// Watch sees; iptables-legacy's rules tell nobody (found at Setup).
	onNFT bool
}

// IPTOption configures an IPT backend.
type IPTOption func(*IPT)

// IPTBinaries selects the iptables and ip6tables commands (e.g.
// iptables-legacy); the defaults are "iptables" and "ip6tables".
func IPTBinaries(v4, v6 string) IPTOption { return func(b *IPT) { b.bin4, b.bin6 = v4, v6 } }

// IPTNetNS makes the backend work in a network namespace: nsfd for its
// netlink sockets and run to start iptables inside it.
func IPTNetNS(nsfd int, run func(func() error) error) IPTOption {
	return func(b *IPT) { b.nsfd, b.run = nsfd, run }
}

// NewIPT finds iptables (and ip6tables where the kernel has IPv6) and opens
// the ip set netlink connection.
func NewIPT(opts ...IPTOption) (*IPT, error) {
	b := &IPT{bin4: "iptables", bin6: "ip6tables", run: func(f func() error) error { return f() }}
	for _, o := range opts {
		o(b)
	}
	err := b.run(func() error {
		var err error
		if b.ipt4, err = iptables.New(iptables.IPFamily(iptables.ProtocolIPv4), iptables.Path(b.bin4), iptables.Timeout(5)); err != nil {
			return fmt.Errorf("iptables: %s: %w", b.bin4, err)
		}
		if _, statErr := os.Stat("/proc/net/if_inet6"); statErr != nil {
			return nil // no IPv6 in this kernel: nothing to lock down there
		}
		if b.ipt6, err = iptables.New(iptables.IPFamily(iptables.ProtocolIPv6), iptables.Path(b.bin6), iptables.Timeout(5)); err != nil {
			return fmt.Errorf("iptables: the kernel has IPv6 but %s is unusable, IPv6 could not be locked down: %w", b.bin6, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if b.sets, err = ipset.Dial(b.nsfd); err != nil {
		return nil, err
	}
	if _, err := b.sets.Protocol(); err != nil {
		b.sets.Close()
		return nil, fmt.Errorf("iptables backend needs kernel ip sets: %w", err)
	}
	return b, nil
}

// Name implements Backend.
func (b *IPT) Name() string { return BackendIPTables }

// Close implements Backend.
func (b *IPT) Close() error {
	if b.sets == nil {
		return nil
	}
	err := b.sets.Close()
	b.sets = nil
	return err
}

// family is one of iptables (v6 false) and ip6tables.
type family struct {
	v6  bool
	ipt *iptables.IPTables
}

// families returns the iptables handles in use, IPv4 first.
func (b *IPT) families() []family {
	fs := []family{{false, b.ipt4}}
	if b.ipt6 != nil {
		fs = append(fs, family{true, b.ipt6})
	}
	return fs
}

func (b *IPT) setOptions(name string, maxElem int) ipset.CreateOptions {
	o := ipset.CreateOptions{Type: "hash:ip", Family: ipset.INet, Timeout: true, Comment: true, MaxElem: uint32(maxElem)}
	if strings.HasSuffix(name, "6") {
		o.Family = ipset.INet6
	}
	if strings.HasPrefix(name, SetStatic) {
		o = ipset.CreateOptions{Type: "hash:net", Family: o.Family, MaxElem: uint32(max(maxElem, 65536))}
	}
	return o
}

// Setup implements Backend. Existing learned sets keep their entries; the
// static sets are rebuilt beside the live ones and swapped in; a chain whose
// rules already are the wanted ones is left alone (counters survive), else
// it is rewritten; our jumps are moved to the top of INPUT/OUTPUT/FORWARD.
func (b *IPT) Setup(p Policy) (QueueMode, error) {
	if b.sets == nil {
		return QueueOff, ErrClosed
	}
	p, err := p.Normalize()
	if err != nil {
		return QueueOff, err
	}
	for _, name := range SetNames {
		if err := b.ensureSet(name, p); err != nil {
			return QueueOff, err
		}
	}
	mode, qerr := QueueOff, error(nil)
	if p.DNSQueue.Enabled {
		mode = QueueXT
		if !b.queueWorks() {
			mode = QueueUnavailable
			qerr = fmt.Errorf("iptables: the NFQUEUE target is not available: %w", ErrQueueUnavailable)
		}
	}
	want, err := b.applyRules(p, mode == QueueXT)
	if err != nil {
		return mode, err
	}
	b.want, b.maxElem, b.queue = want, p.MaxElem, mode == QueueXT
	b.onNFT = b.rulesInNFTables()
	return mode, qerr
}

// rulesInNFTables tells whether our chains are nf_tables objects (iptables-nft, where
// `iptables` is xtables-nft-multi): asked of the kernel, not of the binary's name.
func (b *IPT) rulesInNFTables() bool {
	var opts []nftables.ConnOption
	if b.nsfd > 0 {
		opts = append(opts, nftables.WithNetNSFd(b.nsfd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return false
	}
	for _, fam := range b.families() {
		tf := nftables.TableFamilyIPv4
		if fam.v6 {
			tf = nftables.TableFamilyIPv6
		}
		if ch, err := c.ListChain(&nftables.Table{Name: iptTable, Family: tf}, Chains[0]); err != nil || ch == nil {
			return false
		}
	}
	return true
}

// queueWorks tries the NFQUEUE target in a scratch chain.
func (b *IPT) queueWorks() bool {
	const scratch = "AFERO_QUEUE_PROBE"
	ok := false
	_ = b.run(func() error {
		if err := b.ipt4.ClearChain(iptTable, scratch); err != nil {
			return err
		}
		ok = b.ipt4.Append(iptTable, scratch, "-p", "udp", "-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass") == nil
		return b.ipt4.ClearAndDeleteChain(iptTable, scratch)
	})
	return ok
}

// ensureSet creates a set or keeps an existing one that fits; a learned set
// that no longer fits (set_maxelem changed) and the static sets are
// replaced by swapping in a freshly built one, so rules never see a gap.
func (b *IPT) ensureSet(name string, p Policy) error {
	kname := ipsetName(name)
	opts := b.setOptions(name, p.MaxElem)
	var static []ipset.Entry
	isStatic := strings.HasPrefix(name, SetStatic)
	if isStatic {
		for _, pfx := range p.Static {
			if pfx.Addr().Is6() == strings.HasSuffix(name, "6") {
				static = append(static, ipset.Entry{Addr: pfx.Addr(), Bits: pfx.Bits()})
			}
		}
	}
	have, err := b.sets.List(kname, true)
	switch {
	case errors.Is(err, ipset.ErrNotFound):
		if err := b.sets.Create(kname, opts, false); err != nil {
			return fmt.Errorf("iptables backend: %w", err)
		}
		return b.fill(kname, static)
	case err != nil:
		return fmt.Errorf("iptables backend: %w", err)
	case !isStatic && have.Type == opts.Type && have.Family == opts.Family && have.MaxElem == opts.MaxElem && have.Timeout:
		return nil // keep the learned addresses
	}
	if isStatic && have.Type == opts.Type && have.Family == opts.Family && int(have.Elements) == len(static) {
		cur, err := b.sets.List(kname, false)
		if err == nil && sameEntries(cur.Entries, static) {
			return nil
		}
	}
	tmp := kname + ipsetTmpMark
	_ = b.sets.Destroy(tmp) // left over from an interrupted run
	if err := b.sets.Create(tmp, opts, false); err != nil {
		return fmt.Errorf("iptables backend: %w", err)
	}
	if err := b.fill(tmp, static); err != nil {
		_ = b.sets.Destroy(tmp)
		return err
	}
	if have.Type != opts.Type || have.Family != opts.Family {
		// Swap needs compatible types: only possible when nothing uses it.
		if err := b.sets.Destroy(kname); err != nil {
			_ = b.sets.Destroy(tmp)
			return fmt.Errorf("iptables backend: set %s has type %s %v, want %s %v, and cannot be replaced: %w",
				kname, have.Type, have.Family, opts.Type, opts.Family, err)
		}
		if err := b.sets.Create(kname, opts, false); err != nil {
			return fmt.Errorf("iptables backend: %w", err)
		}
		_ = b.sets.Destroy(tmp)
		return b.fill(kname, static)
	}
	if err := b.sets.Swap(kname, tmp); err != nil {
		_ = b.sets.Destroy(tmp)
		return fmt.Errorf("iptables backend: %w", err)
	}
	if err := b.sets.Destroy(tmp); err != nil {
		return fmt.Errorf("iptables backend: %w", err)
	}
	return nil
}

func (b *IPT) fill(kname string, entries []ipset.Entry) error {
	if err := b.sets.Add(kname, entries, true); err != nil {
		return fmt.Errorf("iptables backend: %w", err)
	}
	return nil
}

func sameEntries(a, b []ipset.Entry) bool {
	key := func(e ipset.Entry) netip.Prefix { return netip.PrefixFrom(e.Addr, e.Bits) }
	as, bs := make([]netip.Prefix, 0, len(a)), make([]netip.Prefix, 0, len(b))
	for _, e := range a {
		as = append(as, key(e))
	}
	for _, e := range b {
		bs = append(bs, key(e))
	}
	slices.SortFunc(as, comparePrefix)
	slices.SortFunc(bs, comparePrefix)
	return slices.Equal(as, bs)
}

// applyFamily brings one family's chains and jumps to the wanted state, in
// one iptables-restore --noflush run (one process and, with iptables-nft,
// one transaction, where a command per rule took seconds on a small CPU):
// each chain that is missing or differs is declared (which creates or
// flushes it) and refilled, our jumps that are there are deleted and the
// wanted ones inserted on top. Chains already right are left alone, so
// their counters survive.
func (b *IPT) applyFamily(ipt *iptables.IPTables, pol iptPolicy) error {
	have, err := b.listAll(ipt)
	if err != nil {
		return err
	}
	var decl, lines []string
	for _, chain := range Chains {
		have, exists := have[chain]
		if exists && slices.Equal(have, wantLines(chain, pol.rules[chain])) {
			continue
		}
		decl = append(decl, ":"+chain+" - [0:0]")
		lines = append(lines, wantLines(chain, pol.rules[chain])...)
	}
	for _, builtin := range []string{"INPUT", "OUTPUT", "FORWARD"} {
		var want []string
		for _, j := range pol.jumps {
			if j.chain == builtin {
				want = append(want, iptLine(builtin, j.spec))
			}
		}
		have := have[builtin]
		ours := 0
		for _, l := range have {
			if isOurTarget(strings.Fields(l)) {
				ours++
			}
		}
		if ours == len(want) && len(have) >= len(want) && slices.Equal(have[:len(want)], want) {
			continue // exactly our jumps, on top
		}
		for _, l := range have {
			if f := strings.Fields(l); isOurTarget(f) {
				lines = append(lines, "-D "+strings.Join(f[1:], " "))
			}
		}
		pos := 1
		for _, j := range pol.jumps {
			if j.chain == builtin {
				lines = append(lines, fmt.Sprintf("-I %s %d %s", builtin, pos, strings.Join(j.spec, " ")))
				pos++
			}
		}
	}
	return b.restore(ipt, append(decl, lines...))
}

// restore runs lines (iptables commands without the command name) against
// the filter table in one iptables-restore --noflush: one process and, with
// iptables-nft, one transaction.
func (b *IPT) restore(ipt *iptables.IPTables, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	input := "*" + iptTable + "\n" + strings.Join(lines, "\n") + "\nCOMMIT\n"
	bin := b.bin4
	if ipt.Proto() == iptables.ProtocolIPv6 {
		bin = b.bin6
	}
	cmd := exec.Command(bin+"-restore", "--noflush", "--wait=5")
	cmd.Stdin = strings.NewReader(input)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s-restore --noflush: %w: %s", bin, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func wantLines(chain string, specs [][]string) []string {
	var out []string
	for _, s := range specs {
		out = append(out, iptLine(chain, s))
	}
	return out
}

// listAll reads the whole filter table in one iptables run: chain -> its
// "-A" lines; a chain that exists without rules maps to an empty slice.
func (b *IPT) listAll(ipt *iptables.IPTables) (map[string][]string, error) {
	bin := b.bin4
	if ipt.Proto() == iptables.ProtocolIPv6 {
		bin = b.bin6
	}
	out, err := exec.Command(bin, "-w", "5", "-t", iptTable, "-S").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("%s -t %s -S: %w: %s", bin, iptTable, err, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, fmt.Errorf("%s -t %s -S: %w", bin, iptTable, err)
	}
	return parseSave(string(out)), nil
}

// parseSave splits `iptables -S` output by chain.
func parseSave(out string) map[string][]string {
	m := map[string][]string{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "-P", "-N":
			if _, ok := m[f[1]]; !ok {
				m[f[1]] = []string{}
			}
		case "-A":
			m[f[1]] = append(m[f[1]], strings.Join(f, " "))
		}
	}
	return m
}

// Add implements Backend: one netlink message per set touched.
func (b *IPT) Add(ps []Pinhole) error { return b.change(ps, true) }

// Fill implements Backend: ipset's add with -exist already leaves nothing
// missing and sets the record's lifetime.
func (b *IPT) Fill(ps []Pinhole) error { return b.change(ps, true) }

// Del implements Backend.
func (b *IPT) Del(ps []Pinhole) error { return b.change(ps, false) }

// change adds (with -exist semantics: an entry there gets the new timeout)
// or deletes (absent entries are fine) pinholes, one message per set.
func (b *IPT) change(ps []Pinhole, add bool) error {
	if b.sets == nil {
		return ErrClosed
	}
	groups, order, err := groupBySet(ps)
	if err != nil {
		return err
	}
	for _, name := range order {
		var entries []ipset.Entry
		for _, p := range groups[name] {
			entries = append(entries, ipset.Entry{Addr: p.Addr, Timeout: p.TTL, Comment: p.Comment})
		}
		op := b.sets.Del
		if add {
			op = b.sets.Add
		}
		if err := op(ipsetName(name), entries, true); err != nil {
			switch {
			case errors.Is(err, ipset.ErrFull):
				return fmt.Errorf("iptables backend: %s: %w%s", describe(groups[name]), ErrSetFull, maxElemNote(b.maxElem))
			case errors.Is(err, ipset.ErrNotFound):
				return fmt.Errorf("iptables backend: %s: ip set %s is missing: %w", describe(groups[name]), ipsetName(name), ErrNotSetUp)
			}
			return fmt.Errorf("iptables backend: %w", err)
		}
	}
	return nil
}

// Check implements Backend: two iptables runs (one per family) and one
// netlink request per set.
func (b *IPT) Check() error {
	if b.sets == nil {
		return ErrClosed
	}
	if b.want == nil {
		return ErrNotSetUp
	}
	problems := b.checkSets()
	err := b.run(func() error {
		for _, fam := range b.families() {
			v6 := fam.v6
			have, err := b.listAll(fam.ipt)
			if err != nil {
				return err
			}
			pol := b.want[v6]
			for _, chain := range Chains {
				if lines, ok := have[chain]; !ok {
					problems = append(problems, fmt.Errorf("%s: chain %s is missing", familyName(v6), chain))
				} else if !slices.Equal(lines, wantLines(chain, pol.rules[chain])) {
					problems = append(problems, fmt.Errorf("%s: chain %s has %d rules, not the %d wanted", familyName(v6), chain, len(lines), len(pol.rules[chain])))
				}
			}
			for _, j := range pol.jumps {
				if !slices.Contains(have[j.chain], iptLine(j.chain, j.spec)) {
					problems = append(problems, fmt.Errorf("%s: jump %q missing", familyName(v6), iptLine(j.chain, j.spec)))
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("iptables backend: check: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("iptables backend: rules damaged: %w", errors.Join(problems...))
	}
	return nil
}

// checkSets lists each of our ip sets (over netlink, terse).
func (b *IPT) checkSets() []error {
	var problems []error
	for _, name := range SetNames {
		if _, err := b.sets.List(ipsetName(name), true); err != nil {
			problems = append(problems, fmt.Errorf("ip set %s: %w", ipsetName(name), err))
		}
	}
	return problems
}

// checkUnwatched implements partlyWatched: the ip sets always (the ipset subsystem notifies
// nobody), the rules only under iptables-legacy. Under iptables-nft Watch sees every deletion
// of a rule or chain, and reading them back would fork iptables and ip6tables (-S) each time.
func (b *IPT) checkUnwatched() error {
	if !b.onNFT {
		return b.Check()
	}
	if b.sets == nil {
		return ErrClosed
	}
	if b.want == nil {
		return ErrNotSetUp
	}
	if problems := b.checkSets(); len(problems) > 0 {
		return fmt.Errorf("iptables backend: ip sets damaged: %w", errors.Join(problems...))
	}
	return nil
}

func familyName(v6 bool) string {
	if v6 {
		return "ip6tables"
	}
	return "iptables"
}

// Teardown implements Backend: our jumps, our chains, our sets; nothing else.
func (b *IPT) Teardown() error {
	if b.sets == nil {
		return ErrClosed
	}
	b.want = nil
	var errs []error
	err := b.run(func() error {
		for _, fam := range b.families() {
			have, err := b.listAll(fam.ipt)
			if err != nil {
				return err
			}
			// One iptables-restore: our jumps, then our chains' rules, then the chains.
			var del, flush, drop []string
			for _, builtin := range []string{"INPUT", "OUTPUT", "FORWARD"} {
				for _, l := range have[builtin] {
					if f := strings.Fields(l); isOurTarget(f) {
						del = append(del, "-D "+strings.Join(f[1:], " "))
					}
				}
			}
			for _, chain := range Chains {
				if _, ok := have[chain]; ok {
					flush = append(flush, "-F "+chain)
					drop = append(drop, "-X "+chain)
				}
			}
			if err := b.restore(fam.ipt, append(append(del, flush...), drop...)); err != nil {
				errs = append(errs, err)
			}
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	for _, name := range SetNames {
		for _, kname := range []string{ipsetName(name), ipsetName(name) + ipsetTmpMark} {
			if err := b.destroySet(kname); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("iptables backend: teardown: %w", errors.Join(errs...))
	}
	return nil
}

// destroySet destroys a set if it exists. iptables-nft drops its references
// to a set after the rule is gone, a little later: retry for a while.
func (b *IPT) destroySet(kname string) error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		err := b.sets.Destroy(kname)
		if err == nil || errors.Is(err, ipset.ErrNotFound) {
			return nil
		}
		if !errors.Is(err, ipset.ErrBusy) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Counts implements Backend.
func (b *IPT) Counts() (map[string]int, error) {
	if b.sets == nil {
		return nil, ErrClosed
	}
	out := map[string]int{}
	for _, name := range SetNames {
		s, err := b.sets.List(ipsetName(name), true)
		if err != nil {
			return nil, fmt.Errorf("iptables backend: %w", err)
		}
		out[name] = int(s.Elements)
	}
	return out, nil
}

// touchesIPT tells whether a notification may mean that iptables-nft's
// filter tables lost rules or chains (ours among them).
func touchesIPT(ev nftEvent) bool {
	if (ev.family != unix.NFPROTO_IPV4 && ev.family != unix.NFPROTO_IPV6) || ev.table != iptTable {
		return false
	}
	switch ev.msg {
	case unix.NFT_MSG_DELTABLE, unix.NFT_MSG_DELCHAIN, unix.NFT_MSG_DELRULE:
		return true
	}
	return false
}

// The iptables backend is watched through iptables-nft's notifications (see Watch).
func (b *IPT) watchNetNS() int          { return b.nsfd }
func (b *IPT) touches(ev nftEvent) bool { return touchesIPT(ev) }
