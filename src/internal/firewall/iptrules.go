//go:build !noiptables

package firewall

import (
	"fmt"
	"strconv"
)

// Names in the iptables backend.
const (
	iptTable     = "filter"
	ipsetPrefix  = "afconn_"
	ipsetTmpMark = "_n" // suffix of the set built beside a live one, then swapped in
)

// ipsetName maps a set name ("allow4") to its kernel ip set.
func ipsetName(set string) string { return ipsetPrefix + set }

// iptJump is one rule in a built-in chain that jumps to our chains.
type iptJump struct {
	chain string   // INPUT, OUTPUT or FORWARD
	spec  []string // e.g. -i eth0 -j AFERO_ALLOW_SERVICE_INPUT
}

// iptPolicy is the iptables rendering of a policy for one family, in the
// exact form `iptables -S` prints, so that the installed rules can be
// compared with the wanted ones.
type iptPolicy struct {
	jumps []iptJump
	rules map[string][][]string // our chain -> rule specs in order
}

// iptRules renders the policy for IPv4 (v6 false) or IPv6. The structure
// follows nftRules; since our chains live inside the filter table's
// built-in chains, "allowed" is RETURN (go on with the rest of INPUT, where
// fw3's rules decide) and "refused" is DROP:
//
//	INPUT -i UPLINK -> SERVICE_INPUT: [DNS replies -> NFQUEUE]; established;
//	                    services -> RETURN; else -> WHITELIST_INPUT
//	WHITELIST_INPUT: source in the static set -> RETURN; else DROP
func iptRules(p Policy, v6 bool, queue bool) iptPolicy {
	fam := "4"
	icmpProto, icmpMatch, icmpOpt := "icmp", "icmp", "--icmp-type"
	if v6 {
		fam = "6"
		icmpProto, icmpMatch, icmpOpt = "ipv6-icmp", "icmp6", "--icmpv6-type"
	}
	icmp := func(t byte) []string {
		return []string{"-p", icmpProto, "-m", icmpMatch, icmpOpt, strconv.Itoa(int(t)), "-j", "RETURN"}
	}
	udp := func(sport, dport int) []string {
		s := []string{"-p", "udp", "-m", "udp"}
		if sport > 0 {
			s = append(s, "--sport", strconv.Itoa(sport))
		}
		if dport > 0 {
			s = append(s, "--dport", strconv.Itoa(dport))
		}
		return append(s, "-j", "RETURN")
	}
	tcpDport := func(dport int) []string {
		return []string{"-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(dport), "-j", "RETURN"}
	}
	established := []string{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN"}
	dnsQueue := func(iif string) [][]string {
		var out [][]string
		for _, proto := range []string{"udp", "tcp"} {
			var s []string
			if iif != "" {
				s = append(s, "-i", iif)
			}
			s = append(s, "-p", proto, "-m", "conntrack", "--ctstate", "ESTABLISHED", "--ctdir", "REPLY",
				"-m", proto, "--sport", "53", "-j", "NFQUEUE", "--queue-num", strconv.Itoa(int(p.DNSQueue.Num)), "--queue-bypass")
			out = append(out, s)
		}
		return out
	}
	inSet := func(set, dir string) []string {
		return []string{"-m", "set", "--match-set", ipsetName(set + fam), dir, "-j", "RETURN"}
	}
	queue = queue && p.DNSQueue.Enabled

	r := map[string][][]string{}
	// Input.
	in := [][]string{}
	if queue {
		in = append(in, dnsQueue("")...)
	}
	in = append(in, established)
	if v6 {
		in = append(in, udp(547, 546))
		for _, t := range append([]byte{icmp6EchoRequest, icmp6RouterAdv, icmp6NeighSol, icmp6NeighAdv, icmp6MLDQuery}, icmpErrors6...) {
			in = append(in, icmp(t))
		}
	} else {
		in = append(in, udp(67, 68), icmp(icmpEchoRequest))
		for _, t := range icmpErrors4 {
			in = append(in, icmp(t))
		}
	}
	r[ChainServiceInput] = append(in, []string{"-j", ChainWhitelistIn})
	// Only the static whitelist opens new connections inwards; learned
	// addresses get their replies through the established rule.
	r[ChainWhitelistIn] = [][]string{inSet(SetStatic, "src"), {"-j", "DROP"}}

	// Output.
	hubMark := fmt.Sprintf("0x%x/0x%x", HubDNSMark, HubDNSMark) // --or-mark, as -S prints it
	out := [][]string{
		{"-p", "udp", "-m", "udp", "--dport", "53", "-j", "MARK", "--set-xmark", hubMark},
		{"-p", "tcp", "-m", "tcp", "--dport", "53", "-j", "MARK", "--set-xmark", hubMark},
		established, udp(0, 53), tcpDport(53)}
	if v6 {
		out = append(out, udp(546, 547), udp(0, 123))
		for _, t := range append([]byte{icmp6EchoRequest, icmp6RouterSol, icmp6NeighSol, icmp6NeighAdv, icmp6MLDReport, icmp6MLD2Report}, icmpErrors6...) {
			out = append(out, icmp(t))
		}
	} else {
		out = append(out, udp(68, 67), udp(0, 123), icmp(icmpEchoRequest))
		for _, t := range icmpErrors4 {
			out = append(out, icmp(t))
		}
	}
	r[ChainServiceOutput] = append(out, []string{"-j", ChainWhitelistOut})
	r[ChainWhitelistOut] = [][]string{inSet(SetStatic, "dst"), inSet(SetAllow, "dst"), {"-j", "DROP"}}

	// Forwarding.
	fwd := [][]string{}
	if queue {
		for _, dev := range p.Uplinks {
			fwd = append(fwd, dnsQueue(dev)...)
		}
	}
	fwd = append(fwd, established)
	for _, dev := range p.Uplinks {
		fwd = append(fwd, []string{"-i", dev, "-j", "DROP"})
	}
	fwd = append(fwd, udp(0, 53), tcpDport(53), udp(0, 123))
	if v6 {
		fwd = append(fwd, icmp(icmp6EchoRequest))
	} else {
		fwd = append(fwd, icmp(icmpEchoRequest))
	}
	r[ChainForwardService] = append(fwd, []string{"-j", ChainForwardWL})
	r[ChainForwardWL] = [][]string{inSet(SetStatic, "dst"), inSet(SetAllow, "dst"), inSet(SetForward, "dst"), {"-j", "DROP"}}

	var jumps []iptJump
	for _, dev := range p.Uplinks {
		jumps = append(jumps, iptJump{"INPUT", []string{"-i", dev, "-j", ChainServiceInput}})
	}
	for _, dev := range p.Uplinks {
		jumps = append(jumps, iptJump{"OUTPUT", []string{"-o", dev, "-j", ChainServiceOutput}})
	}
	for _, dev := range p.Uplinks {
		jumps = append(jumps, iptJump{"FORWARD", []string{"-i", dev, "-j", ChainForwardService}},
			iptJump{"FORWARD", []string{"-o", dev, "-j", ChainForwardService}})
	}
	return iptPolicy{jumps: jumps, rules: r}
}

// setUplinks implements uplinkSetter: iptables matches devices rule by rule
// (-i/-o in the jumps and the forwarding chain), so those are rewritten;
// chains whose rules are unchanged and the ip sets are left alone.
func (b *IPT) setUplinks(p Policy) error {
	if b.sets == nil {
		return ErrClosed
	}
	if b.want == nil {
		return ErrNotSetUp
	}
	want, err := b.applyRules(p, b.queue)
	if err != nil {
		return fmt.Errorf("iptables: uplink devices %v: %w", p.Uplinks, err)
	}
	b.want = want
	return nil
}

// applyRules brings both families' chains and jumps to the policy's.
func (b *IPT) applyRules(p Policy, queue bool) (map[bool]iptPolicy, error) {
	want := map[bool]iptPolicy{}
	err := b.run(func() error {
		for _, fam := range b.families() {
			pol := iptRules(p, fam.v6, queue)
			if err := b.applyFamily(fam.ipt, pol); err != nil {
				return err
			}
			want[fam.v6] = pol
		}
		return nil
	})
	return want, err
}

// iptLine renders a spec as `iptables -S` prints it ("-A CHAIN spec").
func iptLine(chain string, spec []string) string {
	s := "-A " + chain
	for _, a := range spec {
		s += " " + a
	}
	return s
}

// isOurTarget tells whether an `iptables -S` rule line jumps to one of our
// chains; such lines are what Setup and Teardown remove from built-in chains.
func isOurTarget(fields []string) bool {
	for i := 0; i+1 < len(fields); i++ {
		if fields[i] == "-j" || fields[i] == "-g" {
			for _, c := range Chains {
				if fields[i+1] == c {
					return true
				}
			}
		}
	}
	return false
}
