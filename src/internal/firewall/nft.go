package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// NFT is the native nftables backend: everything lives in the table
// "inet afconn", which fw4 never flushes (it only flushes "inet fw4").
type NFT struct {
	nsfd    int
	conn    *nftables.Conn
	table   *nftables.Table
	want    map[string]int // chain -> rule count of the installed policy
	static  map[string]int // static set -> element count of the installed policy
	maxElem int
	probed  struct {
		done  bool
		queue map[QueueMode]bool
	}
}

// NFTOption configures an NFT backend.
type NFTOption func(*NFT)

// NFTNetNS makes the backend work in the network namespace open as fd.
func NFTNetNS(fd int) NFTOption { return func(b *NFT) { b.nsfd = fd } }

// NewNFT opens a netlink connection to nf_tables and checks it works.
func NewNFT(opts ...NFTOption) (*NFT, error) {
	b := &NFT{table: &nftables.Table{Family: nftables.TableFamilyINet, Name: nftTableName}}
	for _, o := range opts {
		o(b)
	}
	if err := b.reconnect(); err != nil {
		return nil, err
	}
	if _, err := b.conn.ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
		b.Close()
		return nil, fmt.Errorf("nftables: list tables: %w", err)
	}
	return b, nil
}

// reconnect replaces the netlink connection: google/nftables keeps a
// serialization error in the Conn forever, so after any failure we start over.
func (b *NFT) reconnect() error {
	if b.conn != nil {
		_ = b.conn.CloseLasting()
	}
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if b.nsfd > 0 {
		opts = append(opts, nftables.WithNetNSFd(b.nsfd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("nftables: open netlink: %w", err)
	}
	b.conn = c
	return nil
}

// flush sends the queued batch; on failure the connection is renewed.
func (b *NFT) flush() error {
	err := b.conn.Flush()
	if err != nil {
		if rerr := b.reconnect(); rerr != nil {
			return errors.Join(err, rerr)
		}
	}
	return err
}

// Name implements Backend.
func (b *NFT) Name() string { return BackendNFT }

// Close implements Backend.
func (b *NFT) Close() error {
	if b.conn == nil {
		return nil
	}
	err := b.conn.CloseLasting()
	b.conn = nil
	return err
}

// setSpec describes one of our sets as Setup creates it.
func (b *NFT) setSpec(name string, maxElem int) *nftables.Set {
	s := &nftables.Set{Table: b.table, Name: name}
	switch name {
	case nftSetUplink:
		// ifname keys are host-order strings; without saying so in the set's
		// user data, the nft tool prints them as "".
		s.KeyType, s.KeyByteOrder = nftables.TypeIFName, binaryutil.NativeEndian
	case "static4", "static6":
		s.Interval = true
	default:
		s.HasTimeout = true
		s.Size = uint32(maxElem + expiredRoom(maxElem))
	}
	if name != nftSetUplink {
		s.KeyType, s.KeyByteOrder = nftables.TypeIPAddr, binaryutil.BigEndian
		if name[len(name)-1] == '6' {
			s.KeyType = nftables.TypeIP6Addr
		}
	}
	return s
}

// expiredRoom is how much larger than set_maxelem a learned set is made. nf_tables frees an
// expired element only at the set's next garbage collection (about once a second, and later
// while other transactions keep committing: each one aborts a collection under way); until then
// it counts against the set's size, so a set holding set_maxelem live addresses and one that just
// expired refused the next answer ("set is full") and the DNS bounds closed live ones to make
// room. The bound on live addresses is kept by connmgr (dnsx's ledger: set_maxelem learned
// addresses); this room is only for the dead awaiting collection.
func expiredRoom(maxElem int) int { return max(maxElem/16, 256) }

// fits tells whether an existing kernel set can be kept for spec.
func fits(have, spec *nftables.Set) bool {
	return have.KeyType.Name == spec.KeyType.Name && have.HasTimeout == spec.HasTimeout &&
		have.Interval == spec.Interval && have.Size == spec.Size
}

// probe finds out once what this kernel supports, with throwaway tables.
func (b *NFT) probe() {
	if b.probed.done {
		return
	}
	b.probed.queue = map[QueueMode]bool{}
	for _, m := range []QueueMode{QueueNative, QueueXT} {
		t := &nftables.Table{Family: nftables.TableFamilyINet, Name: probeTable()}
		b.conn.AddTable(t)
		c := b.conn.AddChain(&nftables.Chain{Table: t, Name: "c", Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(nftPriority)})
		b.conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: exprs(sport(unix.IPPROTO_UDP, 53), []expr.Any{queueExpr(m, 0)})})
		b.conn.DelTable(t)
		b.probed.queue[m] = b.flush() == nil
	}
	b.probed.done = true
}

// Setup implements Backend: one netlink batch that creates what is missing,
// keeps existing learned sets, refills the uplink and static sets and
// rewrites every rule of our chains.
func (b *NFT) Setup(p Policy) (QueueMode, error) {
	if b.conn == nil {
		return QueueOff, ErrClosed
	}
	p, err := p.Normalize()
	if err != nil {
		return QueueOff, err
	}
	b.probe()
	mode := QueueOff
	var qerr error
	if p.DNSQueue.Enabled {
		switch {
		case b.probed.queue[QueueNative]:
			mode = QueueNative
		case b.probed.queue[QueueXT]:
			mode = QueueXT
		default:
			mode = QueueUnavailable
			qerr = fmt.Errorf("nftables: neither the nft queue expression nor the xt NFQUEUE target is accepted by this kernel: %w", ErrQueueUnavailable)
		}
	}

	// Sets that no longer fit the policy (set_maxelem changed) cannot be
	// altered in place: start the table afresh; Firewall re-adds its record.
	have, err := b.conn.GetSets(b.table)
	if err != nil && !isNotFound(err) {
		return mode, fmt.Errorf("nftables: list sets of table inet %s: %w", nftTableName, err)
	}
	specs := map[string]*nftables.Set{}
	for _, name := range append([]string{nftSetUplink}, SetNames...) {
		specs[name] = b.setSpec(name, p.MaxElem)
	}
	for _, h := range have {
		if spec, ok := specs[h.Name]; ok && !fits(h, spec) {
			b.conn.DelTable(b.table)
			break
		}
	}

	b.conn.AddTable(b.table)
	var uplinks []nftables.SetElement
	for _, dev := range p.Uplinks {
		uplinks = append(uplinks, nftables.SetElement{Key: ifnameKey(dev)})
	}
	static := map[string][]nftables.SetElement{
		"static4": intervalElements(p.Static, false),
		"static6": intervalElements(p.Static, true),
	}
	for _, name := range append([]string{nftSetUplink}, SetNames...) {
		s := specs[name]
		if err := b.conn.AddSet(s, nil); err != nil {
			return mode, fmt.Errorf("nftables: set %s: %w", name, err)
		}
		var elems []nftables.SetElement
		switch name {
		case nftSetUplink:
			elems = uplinks
		case "static4", "static6":
			elems = static[name]
		default:
			continue
		}
		b.conn.FlushSet(s)
		if len(elems) > 0 {
			if err := b.conn.SetAddElements(s, elems); err != nil {
				return mode, fmt.Errorf("nftables: set %s: %w", name, err)
			}
		}
	}
	chains := map[string]*nftables.Chain{}
	for _, name := range Chains {
		chains[name] = b.conn.AddChain(&nftables.Chain{Table: b.table, Name: name})
	}
	accept := nftables.ChainPolicyAccept
	for _, bc := range nftBaseChains {
		chains[bc.name] = b.conn.AddChain(&nftables.Chain{Table: b.table, Name: bc.name,
			Type: nftables.ChainTypeFilter, Hooknum: bc.hook,
			Priority: nftables.ChainPriorityRef(nftPriority), Policy: &accept})
	}
	for _, c := range chains {
		b.conn.FlushChain(c)
	}
	want := map[string]int{}
	for _, r := range nftRules(p, mode) {
		b.conn.AddRule(&nftables.Rule{Table: b.table, Chain: chains[r.chain], Exprs: r.exprs})
		want[r.chain]++
	}
	if err := b.flush(); err != nil {
		return mode, fmt.Errorf("nftables: set up table inet %s: %w", nftTableName, err)
	}
	b.want = want
	// Sets whose content Check verifies: a flushed uplinks set would lift the lock-down.
	b.static = map[string]int{"static4": len(static["static4"]), "static6": len(static["static6"]), nftSetUplink: len(uplinks)}
	b.maxElem = p.MaxElem
	return mode, qerr
}

// ifnameKey pads a device name to IFNAMSIZ as the ifname type wants.
func ifnameKey(dev string) []byte {
	k := make([]byte, unix.IFNAMSIZ)
	copy(k, dev)
	return k
}

// intervalElements renders prefixes of one family as interval set
// elements: overlapping and adjacent prefixes merged (the kernel rejects
// overlaps), each range as a start element and an end element (first
// address after the range, flagged), the end omitted at the top of the
// address space as nft does.
func intervalElements(pfxs []netip.Prefix, v6 bool) []nftables.SetElement {
	type rng struct{ lo, hi netip.Addr }
	var rs []rng
	for _, p := range pfxs {
		if p.Addr().Is6() != v6 {
			continue
		}
		rs = append(rs, rng{p.Masked().Addr(), lastAddr(p)})
	}
	slices.SortFunc(rs, func(a, b rng) int { return a.lo.Compare(b.lo) })
	var merged []rng
	for _, r := range rs {
		if n := len(merged); n > 0 {
			last := &merged[n-1]
			if next := last.hi.Next(); !next.IsValid() || r.lo.Compare(next) <= 0 {
				if r.hi.Compare(last.hi) > 0 {
					last.hi = r.hi
				}
				continue
			}
		}
		merged = append(merged, r)
	}
	var out []nftables.SetElement
	for _, r := range merged {
		out = append(out, nftables.SetElement{Key: r.lo.AsSlice()})
		if end := r.hi.Next(); end.IsValid() {
			out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// lastAddr returns the highest address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func isNotFound(err error) bool { return hasErrno(err, unix.ENOENT) }

// hasErrno also catches errnos that google/nftables formats with %v.
func hasErrno(err error, e syscall.Errno) bool {
	return err != nil && (errors.Is(err, e) || strings.Contains(err.Error(), e.Error()))
}

// sets returns the set objects by name for element changes.
func (b *NFT) set(name string) *nftables.Set {
	return b.setSpec(name, b.maxElem)
}

// Netlink bounds a batch of changes must fit in. The elements of one
// NEWSETELEM/DELSETELEM message are one nested attribute, whose length is
// 16 bits (64 KiB); a whole batch is one sendmsg, which the kernel refuses
// ("message too long") beyond the socket's send buffer (wmem_default,
// 208 KiB on Linux and OpenWrt).
const (
	nftMsgBytes   = 48 << 10
	nftBatchBytes = 150 << 10
)

// nftElemBytes bounds the encoded size of one element with lifetime and
// comment (item, key, timeout and user data headers), and nftKeyBytes of
// one bare element (item and key headers).
func nftElemBytes(p Pinhole) int { return 40 + len(p.Addr.AsSlice()) + len(p.Comment) }
func nftKeyBytes(p Pinhole) int  { return 16 + len(p.Addr.AsSlice()) }

// Add implements Backend. Each element is written as add (so it surely
// exists), delete, add with its lifetime, in one batch that the kernel
// applies atomically: the element is never absent, and its expiry becomes
// exactly the new lifetime on every kernel. (A plain add of an existing
// element leaves its expiry alone on kernels before 6.10, and on later
// ones too when the timeout equals the element's: a refresh with the same
// TTL would refresh nothing.) Many pinholes go in batches that fit
// netlink's bounds; each batch is atomic, the whole change is not. It works
// on the sets a daemon set up too (connmgr fw add without a daemon); when
// they do not exist the error wraps ErrNotSetUp.
func (b *NFT) Add(ps []Pinhole) error { return b.add(ps, nftRefresh) }

// Fill implements Backend: a plain add, which leaves an element that is
// there alone, in batches as Add.
func (b *NFT) Fill(ps []Pinhole) error { return b.add(ps, nftFill) }

func (b *NFT) add(ps []Pinhole, mode nftMode) error {
	return b.batched(ps, mode, func(failed []Pinhole, err error) error {
		switch {
		case hasErrno(err, unix.ENFILE):
			return fmt.Errorf("nftables: %s: %w%s", describe(failed), ErrSetFull, maxElemNote(b.maxElem))
		case isNotFound(err):
			return fmt.Errorf("nftables: %s: table inet %s or its sets are missing: %w", describe(failed), nftTableName, ErrNotSetUp)
		}
		return fmt.Errorf("nftables: add %s: %w", describe(failed), err)
	})
}

// Del implements Backend. Deleting an absent element fails the whole batch,
// so each set gets add-then-delete, which removes present and absent alike.
func (b *NFT) Del(ps []Pinhole) error {
	return b.batched(ps, nftDelete, func(failed []Pinhole, err error) error {
		switch {
		case hasErrno(err, unix.ENFILE):
			// The set is full, so the temporary add failed: delete one by
			// one, ignoring absent elements.
			return b.delEach(failed)
		case isNotFound(err):
			return fmt.Errorf("nftables: delete %s: table inet %s or its sets are missing: %w", describe(failed), nftTableName, ErrNotSetUp)
		}
		return fmt.Errorf("nftables: delete %s: %w", describe(failed), err)
	})
}

// nftMode is what batched writes for each element.
type nftMode int

const (
	nftRefresh nftMode = iota // add bare, delete, add with lifetime
	nftFill                   // add with lifetime
	nftDelete                 // add bare, delete
)

// batched queues, for each set and each chunk of its elements that fits a
// message, the messages of mode, and sends them in batches that fit a
// sendmsg. A batch the kernel refuses goes to fail with its pinholes,
// whose answer ends the change when it is an error.
func (b *NFT) batched(ps []Pinhole, mode nftMode, fail func([]Pinhole, error) error) error {
	if b.conn == nil {
		return ErrClosed
	}
	groups, order, err := groupBySet(ps)
	if err != nil {
		return err
	}
	var inBatch []Pinhole
	size := 0
	send := func() error {
		if len(inBatch) == 0 {
			return nil
		}
		err := b.flush()
		failed := inBatch
		inBatch, size = nil, 0
		if err != nil {
			return fail(failed, err)
		}
		return nil
	}
	for _, name := range order {
		s := b.set(name)
		g := groups[name]
		for len(g) > 0 {
			n, timedBytes, keyBytes := 0, 0, 0
			for n < len(g) && timedBytes+nftElemBytes(g[n]) <= nftMsgBytes {
				timedBytes += nftElemBytes(g[n])
				keyBytes += nftKeyBytes(g[n])
				n++
			}
			switch mode {
			case nftFill:
				keyBytes = 0
			case nftDelete:
				timedBytes = 0
			}
			if size+timedBytes+2*keyBytes > nftBatchBytes {
				if err := send(); err != nil {
					return err
				}
			}
			plain := make([]nftables.SetElement, n)
			timed := make([]nftables.SetElement, n)
			for i, p := range g[:n] {
				key := p.Addr.AsSlice()
				plain[i] = nftables.SetElement{Key: key}
				timed[i] = nftables.SetElement{Key: key, Timeout: p.TTL, Comment: p.Comment}
			}
			var ops []func() error
			if mode != nftFill {
				ops = append(ops, func() error { return b.conn.SetAddElements(s, plain) },
					func() error { return b.conn.SetDeleteElements(s, plain) })
			}
			if mode != nftDelete {
				ops = append(ops, func() error { return b.conn.SetAddElements(s, timed) })
			}
			for _, op := range ops {
				if err := op(); err != nil {
					_ = b.reconnect() // drops what was queued
					return fmt.Errorf("nftables: set %s: %w", name, err)
				}
			}
			inBatch = append(inBatch, g[:n]...)
			size += timedBytes + 2*keyBytes
			g = g[n:]
		}
	}
	return send()
}

func (b *NFT) delEach(ps []Pinhole) error {
	for _, p := range ps {
		if err := b.conn.SetDeleteElements(b.set(setName(p.role(), p.Addr)), []nftables.SetElement{{Key: p.Addr.AsSlice()}}); err != nil {
			return err
		}
		if err := b.flush(); err != nil && !isNotFound(err) {
			return fmt.Errorf("nftables: delete %v from set %s: %w", p.Addr, setName(p.role(), p.Addr), err)
		}
	}
	return nil
}

// groupBySet normalizes pinholes and groups them by set name, keeping the
// first-seen order of sets and dropping duplicate addresses (last wins).
func groupBySet(ps []Pinhole) (map[string][]Pinhole, []string, error) {
	groups := map[string][]Pinhole{}
	var order []string
	type key struct {
		set  string
		addr netip.Addr
	}
	at := make(map[key]int, len(ps))
	for _, p := range ps {
		p, err := p.normalize()
		if err != nil {
			return nil, nil, err
		}
		name := setName(p.role(), p.Addr)
		if _, ok := groups[name]; !ok {
			order = append(order, name)
		}
		k := key{name, p.Addr}
		if i, ok := at[k]; ok {
			groups[name][i] = p
			continue
		}
		at[k] = len(groups[name])
		groups[name] = append(groups[name], p)
	}
	return groups, order, nil
}

// describe names the pinholes of an error message briefly.
func describe(ps []Pinhole) string {
	switch len(ps) {
	case 0:
		return "no address"
	case 1:
		return ps[0].Addr.String()
	}
	return fmt.Sprintf("%d addresses (%v, ...)", len(ps), ps[0].Addr)
}

// Check implements Backend.
func (b *NFT) Check() error {
	if b.conn == nil {
		return ErrClosed
	}
	if b.want == nil {
		return ErrNotSetUp
	}
	t, err := b.conn.ListTableOfFamily(nftTableName, nftables.TableFamilyINet)
	if err != nil || t == nil {
		return fmt.Errorf("nftables: table inet %s is missing", nftTableName)
	}
	var problems []error
	for name, n := range b.want {
		rules, err := b.conn.GetRules(b.table, &nftables.Chain{Table: b.table, Name: name})
		switch {
		case err != nil:
			problems = append(problems, fmt.Errorf("chain %s: %v", name, err))
		case len(rules) != n:
			problems = append(problems, fmt.Errorf("chain %s has %d rules, want %d", name, len(rules), n))
		}
	}
	sets, err := b.conn.GetSets(b.table)
	if err != nil {
		problems = append(problems, fmt.Errorf("list sets: %v", err))
	}
	for _, name := range append([]string{nftSetUplink}, SetNames...) {
		if !slices.ContainsFunc(sets, func(s *nftables.Set) bool { return s.Name == name }) {
			problems = append(problems, fmt.Errorf("set %s is missing", name))
		}
	}
	for name, n := range b.static {
		if n == 0 {
			continue
		}
		elems, err := b.conn.GetSetElements(b.set(name))
		if err == nil && len(elems) != n {
			problems = append(problems, fmt.Errorf("set %s has %d elements, want %d", name, len(elems), n))
		}
	}
	if len(problems) > 0 {
		slices.SortFunc(problems, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		return fmt.Errorf("nftables: table inet %s damaged: %w", nftTableName, errors.Join(problems...))
	}
	return nil
}

// Teardown implements Backend: our table is all we ever add.
func (b *NFT) Teardown() error {
	if b.conn == nil {
		return ErrClosed
	}
	b.want, b.static = nil, nil
	t, err := b.conn.ListTableOfFamily(nftTableName, nftables.TableFamilyINet)
	if err != nil || t == nil {
		return nil // nothing of ours is there
	}
	b.conn.DelTable(b.table)
	if err := b.flush(); err != nil && !isNotFound(err) {
		return fmt.Errorf("nftables: delete table inet %s: %w", nftTableName, err)
	}
	return nil
}

// Counts implements Backend. It reads the sets over a netlink socket of
// its own and only counts: google/nftables decodes every element into a
// struct, which takes seconds for a full set of 65,536.
func (b *NFT) Counts() (map[string]int, error) {
	if b.conn == nil {
		return nil, ErrClosed
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: b.nsfd})
	if err != nil {
		return nil, fmt.Errorf("nftables: open netlink: %w", err)
	}
	defer c.Close()
	out := map[string]int{}
	for _, name := range SetNames {
		ae := netlink.NewAttributeEncoder()
		ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, nftTableName)
		ae.String(unix.NFTA_SET_ELEM_LIST_SET, name)
		attrs, err := ae.Encode()
		if err != nil {
			return nil, err
		}
		msgs, err := c.Execute(netlink.Message{
			Header: netlink.Header{
				Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
				Flags: netlink.Request | netlink.Dump,
			},
			Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
		})
		if err != nil {
			return nil, fmt.Errorf("nftables: list set %s: %w", name, err)
		}
		n := 0
		for _, m := range msgs {
			k, err := countElements(m.Data)
			if err != nil {
				return nil, fmt.Errorf("nftables: list set %s: %w", name, err)
			}
			n += k
		}
		out[name] = n
	}
	return out, nil
}

// countElements counts the elements of one NEWSETELEM message of a set
// dump (nfgenmsg, then the list attributes), not counting the end elements
// of intervals.
func countElements(data []byte) (int, error) {
	if len(data) < 4 {
		return 0, fmt.Errorf("set element message of %d bytes", len(data))
	}
	ad, err := netlink.NewAttributeDecoder(data[4:])
	if err != nil {
		return 0, err
	}
	ad.ByteOrder = binary.BigEndian
	n := 0
	for ad.Next() {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		ad.Nested(func(list *netlink.AttributeDecoder) error {
			for list.Next() {
				end := false
				list.Nested(func(elem *netlink.AttributeDecoder) error {
					elem.ByteOrder = binary.BigEndian
					for elem.Next() {
						if elem.Type() == unix.NFTA_SET_ELEM_FLAGS {
							end = elem.Uint32()&unix.NFT_SET_ELEM_INTERVAL_END != 0
						}
					}
					return elem.Err()
				})
				if !end {
					n++
				}
			}
			return list.Err()
		})
	}
	return n, ad.Err()
}

// probeTable names the throwaway table of the capability probes, unique
// per process so that two processes probing at once do not collide.
func probeTable() string { return nftTableName + "_probe" + strconv.Itoa(os.Getpid()) }
