package firewall

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// Names in the nft backend's table.
const (
	nftTableName = "afconn"
	nftSetUplink = "uplinks"
	// nftPriority runs our base chains before fw4's (priority filter = 0), so
	// what we drop never reaches fw4 and what we accept still has to pass fw4.
	nftPriority = -10
)

// nftBaseChains are the hooked chains, in the order they are created.
var nftBaseChains = []struct {
	name string
	hook *nftables.ChainHook
}{
	{"input", nftables.ChainHookInput},
	{"output", nftables.ChainHookOutput},
	{"forward", nftables.ChainHookForward},
}

// Conntrack state bits (nf_conntrack_common.h, as nft's ct state uses them).
const (
	ctEstablished = 2
	ctRelated     = 4
)

// ICMP types (RFC 792 / RFC 4443) the policy lets through.
const (
	icmpEchoRequest   = 8
	icmpDestUnreach   = 3
	icmpTimeExceeded  = 11
	icmpParamProblem  = 12
	icmp6DestUnreach  = 1
	icmp6PktTooBig    = 2
	icmp6TimeExceeded = 3
	icmp6ParamProblem = 4
	icmp6EchoRequest  = 128
	icmp6MLDQuery     = 130
	icmp6MLDReport    = 131
	icmp6RouterSol    = 133
	icmp6RouterAdv    = 134
	icmp6NeighSol     = 135
	icmp6NeighAdv     = 136
	icmp6MLD2Report   = 143
)

// icmpErrors4 and icmpErrors6 are the ICMP errors needed in both directions
// (path MTU discovery, unreachable, traceroute); most are "related" anyway.
var (
	icmpErrors4 = []byte{icmpDestUnreach, icmpTimeExceeded, icmpParamProblem}
	icmpErrors6 = []byte{icmp6DestUnreach, icmp6PktTooBig, icmp6TimeExceeded, icmp6ParamProblem}
)

// nftRule is one rule: the chain it goes to and its expressions.
type nftRule struct {
	chain string
	exprs []expr.Any
}

// exprs concatenates expression lists.
func exprs(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func accept() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }
func drop() []expr.Any {
	return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
}
func jump(chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
}

func cmpEq(data ...byte) expr.Any {
	return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data}
}

// nfproto matches the network family inside the inet table.
func nfproto(fam byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, cmpEq(fam)}
}

func l4proto(proto byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmpEq(proto)}
}

// port matches the transport source (offset 0) or destination (offset 2) port.
func port(proto byte, offset uint32, p uint16) []expr.Any {
	return exprs(l4proto(proto), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: offset, Len: 2},
		cmpEq(binaryutil.BigEndian.PutUint16(p)...),
	})
}
func sport(proto byte, p uint16) []expr.Any { return port(proto, 0, p) }
func dport(proto byte, p uint16) []expr.Any { return port(proto, 2, p) }

// icmpType matches an ICMP (proto 1) or ICMPv6 (proto 58) type.
func icmpType(proto, typ byte) []expr.Any {
	return exprs(l4proto(proto), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		cmpEq(typ),
	})
}

// ctState matches when any of the bits in mask is set.
func ctState(mask uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// ctReply matches packets in the reply direction of a tracked connection
// that this host or a LAN client started: only those can be DNS answers.
func ctReply() []expr.Any {
	return exprs(ctState(ctEstablished), []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeyDIRECTION},
		cmpEq(1), // IP_CT_DIR_REPLY
	})
}

// markOr sets bits in the packet's mark, keeping the others.
func markOr(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^bits), Xor: binaryutil.NativeEndian.PutUint32(bits)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

// ifIn matches the input (iif) or output interface name against the uplink set.
func ifIn(key expr.MetaKey, invert bool) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: nftSetUplink, Invert: invert},
	}
}

// addrIn matches the source or destination address against a named set.
func addrIn(v6, src bool, set string) []expr.Any {
	fam, off, n := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if src {
		off = 12
	}
	if v6 {
		fam, off, n = unix.NFPROTO_IPV6, 24, 16
		if src {
			off = 8
		}
	}
	return exprs(nfproto(fam), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: set},
	})
}

// queueExpr returns the queue statement for a mode (nil for none).
func queueExpr(mode QueueMode, num uint16) expr.Any {
	switch mode {
	case QueueNative:
		return &expr.Queue{Num: num, Total: 1, Flag: expr.QueueFlagBypass}
	case QueueXT:
		// struct xt_NFQ_info_v3 {u16 queuenum, queues_total, flags}, host
		// order, padded to 8 bytes as XT_ALIGN does; flags 1 = NFQ_FLAG_BYPASS.
		info := make(xt.Unknown, 8)
		copy(info[0:2], binaryutil.NativeEndian.PutUint16(num))
		copy(info[2:4], binaryutil.NativeEndian.PutUint16(1))
		copy(info[4:6], binaryutil.NativeEndian.PutUint16(1))
		return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &info}
	}
	return nil
}

// setUplinks implements uplinkSetter: the rules match the input and output
// device against the set "uplinks", so changing the devices is one atomic
// batch that refills the set.
func (b *NFT) setUplinks(p Policy) error {
	if b.conn == nil {
		return ErrClosed
	}
	if b.want == nil {
		return ErrNotSetUp
	}
	s := b.setSpec(nftSetUplink, b.maxElem)
	b.conn.FlushSet(s)
	if len(p.Uplinks) > 0 {
		var elems []nftables.SetElement
		for _, dev := range p.Uplinks {
			elems = append(elems, nftables.SetElement{Key: ifnameKey(dev)})
		}
		if err := b.conn.SetAddElements(s, elems); err != nil {
			return fmt.Errorf("nftables: set %s: %w", nftSetUplink, err)
		}
	}
	if err := b.flush(); err != nil {
		return fmt.Errorf("nftables: uplink devices %v: %w", p.Uplinks, err)
	}
	b.static[nftSetUplink] = len(p.Uplinks)
	return nil
}

// nftRules renders the policy as rules; the sets and chains they use are
// created by the backend. The structure is the same in both backends:
//
//	base chain:  not on an uplink -> accept (untouched); jump SERVICE; jump WHITELIST; drop
//	SERVICE:     [DNS replies -> queue]; established,related; DHCP, DNS, NTP, ICMP -> accept
//	WHITELIST:   destination in a set (output, forward) or source in the
//	             static set (input) -> accept
//
// "accept" in our table only ends our table's verdict: fw4's chains (priority
// 0) still see the packet, so we never open what fw4 closes.
func nftRules(p Policy, qmode QueueMode) []nftRule {
	const (
		tcp   = unix.IPPROTO_TCP
		udp   = unix.IPPROTO_UDP
		icmp  = unix.IPPROTO_ICMP
		icmp6 = unix.IPPROTO_ICMPV6
	)
	var rules []nftRule
	add := func(chain string, parts ...[]expr.Any) {
		rules = append(rules, nftRule{chain, exprs(parts...)})
	}
	q := queueExpr(qmode, p.DNSQueue.Num)
	if !p.DNSQueue.Enabled {
		q = nil
	}

	// Base chains.
	add("input", ifIn(expr.MetaKeyIIFNAME, true), accept())
	add("input", jump(ChainServiceInput))
	add("input", jump(ChainWhitelistIn))
	add("input", drop())
	add("output", ifIn(expr.MetaKeyOIFNAME, true), accept())
	add("output", jump(ChainServiceOutput))
	add("output", jump(ChainWhitelistOut))
	add("output", drop())
	add("forward", ifIn(expr.MetaKeyIIFNAME, true), ifIn(expr.MetaKeyOIFNAME, true), accept())
	add("forward", jump(ChainForwardService))
	add("forward", jump(ChainForwardWL))
	add("forward", drop())

	// Input from the uplinks: replies, DHCP(v6) answers, ping, errors, ND.
	if q != nil {
		for _, proto := range []byte{udp, tcp} {
			add(ChainServiceInput, ctReply(), sport(proto, 53), []expr.Any{&expr.Counter{}, q})
		}
	}
	add(ChainServiceInput, ctState(ctEstablished|ctRelated), accept())
	add(ChainServiceInput, sport(udp, 67), dport(udp, 68), accept())
	add(ChainServiceInput, nfproto(unix.NFPROTO_IPV6), sport(udp, 547), dport(udp, 546), accept())
	add(ChainServiceInput, icmpType(icmp, icmpEchoRequest), accept())
	for _, t := range icmpErrors4 {
		add(ChainServiceInput, icmpType(icmp, t), accept())
	}
	for _, t := range append([]byte{icmp6EchoRequest, icmp6RouterAdv, icmp6NeighSol, icmp6NeighAdv, icmp6MLDQuery}, icmpErrors6...) {
		add(ChainServiceInput, icmpType(icmp6, t), accept())
	}

	// Output to the uplinks: DNS (marked as the host's own first), DHCP(v6), NTP, ping,
	// errors, ND.
	add(ChainServiceOutput, dport(udp, 53), markOr(HubDNSMark))
	add(ChainServiceOutput, dport(tcp, 53), markOr(HubDNSMark))
	add(ChainServiceOutput, ctState(ctEstablished|ctRelated), accept())
	add(ChainServiceOutput, dport(udp, 53), accept())
	add(ChainServiceOutput, dport(tcp, 53), accept())
	add(ChainServiceOutput, sport(udp, 68), dport(udp, 67), accept())
	add(ChainServiceOutput, nfproto(unix.NFPROTO_IPV6), sport(udp, 546), dport(udp, 547), accept())
	add(ChainServiceOutput, dport(udp, 123), accept())
	add(ChainServiceOutput, icmpType(icmp, icmpEchoRequest), accept())
	for _, t := range icmpErrors4 {
		add(ChainServiceOutput, icmpType(icmp, t), accept())
	}
	for _, t := range append([]byte{icmp6EchoRequest, icmp6RouterSol, icmp6NeighSol, icmp6NeighAdv, icmp6MLDReport, icmp6MLD2Report}, icmpErrors6...) {
		add(ChainServiceOutput, icmpType(icmp6, t), accept())
	}

	// Forwarding through an uplink: replies, LAN clients' DNS, NTP, ping.
	if q != nil {
		for _, proto := range []byte{udp, tcp} {
			add(ChainForwardService, ifIn(expr.MetaKeyIIFNAME, false), ctReply(), sport(proto, 53), []expr.Any{&expr.Counter{}, q})
		}
	}
	add(ChainForwardService, ctState(ctEstablished|ctRelated), accept())
	// New connections from the uplinks are never forwarded.
	add(ChainForwardService, ifIn(expr.MetaKeyIIFNAME, false), drop())
	add(ChainForwardService, dport(udp, 53), accept())
	add(ChainForwardService, dport(tcp, 53), accept())
	add(ChainForwardService, dport(udp, 123), accept())
	add(ChainForwardService, icmpType(icmp, icmpEchoRequest), accept())
	add(ChainForwardService, icmpType(icmp6, icmp6EchoRequest), accept())

	// Whitelists. Output and forwarding accept new connections to a
	// whitelisted address; input only from the static whitelist (the
	// whitelist file's addresses and prefixes, both ways as in the seed): a
	// learned address gets its replies through the established rule above
	// and never opens a new connection into the device. Forwarding also
	// accepts the device's own learned addresses (LAN clients resolving
	// through the device's resolver get their answers whitelisted that way);
	// a LAN client's learned addresses (fwd) open forwarding only.
	for _, v6 := range []bool{false, true} {
		fam := "4"
		if v6 {
			fam = "6"
		}
		add(ChainWhitelistIn, addrIn(v6, true, SetStatic+fam), accept())
		for _, role := range []string{SetStatic, SetAllow} {
			add(ChainWhitelistOut, addrIn(v6, false, role+fam), accept())
		}
	}
	for _, v6 := range []bool{false, true} {
		fam := "4"
		if v6 {
			fam = "6"
		}
		for _, role := range []string{SetStatic, SetAllow, SetForward} {
			add(ChainForwardWL, addrIn(v6, false, role+fam), accept())
		}
	}
	return rules
}
