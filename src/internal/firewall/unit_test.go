package firewall

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables/expr"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func TestPolicyNormalize(t *testing.T) {
	tests := []struct {
		name    string
		in      Policy
		want    Policy
		wantErr string
	}{
		{
			name: "defaults, dedup, sort, mask",
			in: Policy{Uplinks: []string{"wwan0", "eth0", "eth0"},
				Static: []netip.Prefix{pfx("198.18.1.7/24"), pfx("198.18.0.1/32"), pfx("198.18.1.0/24"), pfx("::ffff:198.18.2.0/120")}},
			want: Policy{Uplinks: []string{"eth0", "wwan0"}, MaxElem: DefaultMaxElem,
				Static: []netip.Prefix{pfx("198.18.0.1/32"), pfx("198.18.1.0/24"), pfx("198.18.2.0/24")}},
		},
		{name: "empty uplink", in: Policy{Uplinks: []string{""}}, wantErr: `uplink ""`},
		{name: "long uplink", in: Policy{Uplinks: []string{"abcdefghijklmnop"}}, wantErr: "1 to 15 bytes"},
		{name: "wildcard uplink", in: Policy{Uplinks: []string{"eth+"}}, wantErr: "not allowed"},
		{name: "space in uplink", in: Policy{Uplinks: []string{"eth 0"}}, wantErr: "not allowed"},
		{name: "open everything", in: Policy{Static: []netip.Prefix{pfx("0.0.0.0/0")}}, wantErr: "open everything"},
		{name: "invalid prefix", in: Policy{Static: []netip.Prefix{{}}}, wantErr: "invalid static"},
		{name: "maxelem negative", in: Policy{MaxElem: -1}, wantErr: "set_maxelem -1"},
		{name: "maxelem huge", in: Policy{MaxElem: 1 << 25}, wantErr: "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.Normalize()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Uplinks, tt.want.Uplinks) || !slices.Equal(got.Static, tt.want.Static) || got.MaxElem != tt.want.MaxElem {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPinholeNormalize(t *testing.T) {
	p, err := Pinhole{Addr: addr("::ffff:198.18.0.1"), TTL: 30 * 24 * time.Hour, Comment: strings.Repeat("x", 300)}.normalize()
	if err != nil || p.Addr != addr("198.18.0.1") || p.TTL != MaxTTL || len(p.Comment) != maxComment {
		t.Fatalf("got %+v, %v", p, err)
	}
	for _, bad := range []Pinhole{{}, {Addr: addr("0.0.0.0")}, {Addr: addr("::")}, {Addr: addr("198.18.0.1"), TTL: -time.Second}} {
		if _, err := bad.normalize(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestIntervalElements(t *testing.T) {
	keys := func(v6 bool, ps ...string) []string {
		var in []netip.Prefix
		for _, s := range ps {
			in = append(in, pfx(s))
		}
		var out []string
		for _, e := range intervalElements(in, v6) {
			a, _ := netip.AddrFromSlice(e.Key)
			s := a.String()
			if e.IntervalEnd {
				s = "end " + s
			}
			out = append(out, s)
		}
		return out
	}
	tests := []struct {
		name string
		v6   bool
		in   []string
		want []string
	}{
		{"host", false, []string{"198.18.0.1/32"}, []string{"198.18.0.1", "end 198.18.0.2"}},
		{"contained", false, []string{"198.18.0.0/16", "198.18.3.0/24"}, []string{"198.18.0.0", "end 198.19.0.0"}},
		{"adjacent merge", false, []string{"198.18.0.0/25", "198.18.0.128/25"}, []string{"198.18.0.0", "end 198.18.1.0"}},
		{"disjoint", false, []string{"198.19.0.0/24", "198.18.0.0/24"}, []string{"198.18.0.0", "end 198.18.1.0", "198.19.0.0", "end 198.19.1.0"}},
		{"top of space", false, []string{"255.255.255.0/24"}, []string{"255.255.255.0"}},
		{"other family skipped", false, []string{"2001:db8::/32"}, nil},
		{"v6", true, []string{"2001:db8::/32", "198.18.0.0/24"}, []string{"2001:db8::", "end 2001:db9::"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := keys(tt.v6, tt.in...); !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRecord(t *testing.T) {
	t0 := time.Unix(1000, 0)
	r := newRecord()
	a, b := addr("198.18.0.1"), addr("198.18.0.2")
	if r.covers(Pinhole{Addr: a, TTL: time.Second}, t0) {
		t.Fatal("empty record covers")
	}
	r.put(Pinhole{Addr: a, TTL: 60 * time.Second, Comment: "a"}, t0)
	steps := []struct {
		p    Pinhole
		at   time.Duration
		want bool
	}{
		{Pinhole{Addr: a, TTL: 30 * time.Second}, 0, true},            // shorter: covered
		{Pinhole{Addr: a, TTL: 60 * time.Second}, 0, true},            // same expiry
		{Pinhole{Addr: a, TTL: 60 * time.Second}, time.Second, false}, // later expiry
		{Pinhole{Addr: a, TTL: 0}, 0, false},                          // permanent wanted
		{Pinhole{Addr: a, TTL: time.Second, Forward: true}, 0, false}, // other role
		{Pinhole{Addr: b, TTL: time.Second}, 0, false},
	}
	for i, s := range steps {
		if got := r.covers(s.p, t0.Add(s.at)); got != s.want {
			t.Errorf("step %d: covers(%+v) = %v, want %v", i, s.p, got, s.want)
		}
	}
	r.put(Pinhole{Addr: b}, t0)                   // permanent
	r.put(Pinhole{Addr: b, TTL: time.Second}, t0) // stays permanent
	r.put(Pinhole{Addr: a, TTL: 5 * time.Second, Forward: true}, t0)
	if !r.covers(Pinhole{Addr: b, TTL: time.Hour}, t0) {
		t.Error("permanent entry became timed")
	}
	live := r.live(t0.Add(10 * time.Second))
	want := []Pinhole{{Addr: a, TTL: 50 * time.Second, Comment: "a"}, {Addr: b}}
	if !slices.Equal(live, want) {
		t.Errorf("live = %+v, want %+v", live, want)
	}
	if d4, d6, f4, f6 := r.counts(t0); d4 != 2 || d6 != 0 || f4 != 1 || f6 != 0 {
		t.Errorf("counts = %d %d %d %d", d4, d6, f4, f6)
	}
	r.prune(t0.Add(time.Minute))
	if got := r.live(t0.Add(time.Minute)); !slices.Equal(got, []Pinhole{{Addr: b}}) {
		t.Errorf("after prune: %+v", got)
	}
	r.remove(b, false)
	if len(r.m) != 0 {
		t.Errorf("not empty after remove: %+v", r.m)
	}
}

func TestChoose(t *testing.T) {
	tests := []struct {
		opt     string
		f       Facts
		want    string
		wantErr bool
	}{
		{"auto", Facts{NFT: true, FW4Table: true, IPTables: true}, BackendNFT, false},
		{"auto", Facts{NFT: true, FW4Installed: true, IPTables: true}, BackendNFT, false},
		{"auto", Facts{NFT: true}, BackendNFT, false},
		{"auto", Facts{NFT: true, IPTables: true}, BackendIPTables, false}, // fw3 on an nft-capable kernel
		{"", Facts{IPTables: true}, BackendIPTables, false},
		{"auto", Facts{}, "", true},
		{"nftables", Facts{NFT: true, IPTables: true}, BackendNFT, false},
		{"nftables", Facts{IPTables: true}, "", true},
		{"iptables", Facts{NFT: true, FW4Table: true, IPTables: true}, BackendIPTables, false},
		{"iptables", Facts{NFT: true}, "", true},
		{"ipfw", Facts{NFT: true}, "", true},
		// The build for fw4 images (tag noiptables): iptables is never chosen.
		{"iptables", Facts{NFT: true, IPTables: true, NoIPTBackend: true}, "", true},
		{"auto", Facts{NFT: true, IPTables: true, NoIPTBackend: true}, BackendNFT, false},
		{"auto", Facts{IPTables: true, NoIPTBackend: true}, "", true},
		{"nftables", Facts{NFT: true, IPTables: true, NoIPTBackend: true}, BackendNFT, false},
	}
	for _, tt := range tests {
		got, err := Choose(tt.opt, tt.f)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Choose(%q, %+v) = %q, %v; want %q, err %v", tt.opt, tt.f, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestIPTRulesShape(t *testing.T) {
	p, _ := Policy{Uplinks: []string{"eth0", "wwan0"}, DNSQueue: QueueHook{Enabled: true, Num: 5}}.Normalize()
	for _, v6 := range []bool{false, true} {
		pol := iptRules(p, v6, true)
		if len(pol.jumps) != 8 {
			t.Errorf("v6=%v: %d jumps, want 8 (2 input, 2 output, 4 forward)", v6, len(pol.jumps))
		}
		for _, c := range Chains {
			rules := pol.rules[c]
			if len(rules) == 0 {
				t.Fatalf("v6=%v: chain %s empty", v6, c)
			}
			last := strings.Join(rules[len(rules)-1], " ")
			if !strings.HasPrefix(last, "-j ") {
				t.Errorf("v6=%v: chain %s ends with %q, want an unconditional jump or DROP", v6, c, last)
			}
		}
		q := strings.Join(pol.rules[ChainServiceInput][0], " ")
		if !strings.Contains(q, "--queue-num 5 --queue-bypass") || !strings.Contains(q, "--ctdir REPLY") {
			t.Errorf("v6=%v: first input rule %q is not the DNS queue", v6, q)
		}
		fam := "4"
		if v6 {
			fam = "6"
		}
		// Only the static whitelist opens new inbound connections; learned addresses
		// (allow, fwd) open outwards.
		if in := pol.rules[ChainWhitelistIn]; len(in) != 2 || !strings.Contains(strings.Join(in[0], " "), "afconn_static"+fam+" src") {
			t.Errorf("v6=%v: whitelist input is %q, want the static set and DROP", v6, in)
		}
		if !strings.Contains(strings.Join(pol.rules[ChainWhitelistOut][1], " "), "afconn_allow"+fam+" dst") {
			t.Errorf("v6=%v: whitelist output uses %q", v6, pol.rules[ChainWhitelistOut][1])
		}
	}
	if pol := iptRules(p, false, false); strings.Contains(strings.Join(pol.rules[ChainServiceInput][0], " "), "NFQUEUE") {
		t.Error("queue rule present although the queue is unavailable")
	}
}

func TestParseSaveAndTargets(t *testing.T) {
	out := `-P INPUT ACCEPT
-N AFERO_FORWARD_WHITELIST
-N FOREIGN
-A INPUT -i eth0 -j AFERO_ALLOW_SERVICE_INPUT
-A INPUT -i br-lan -j FOREIGN
-A INPUT -m comment --comment "AFERO_ALLOW_SERVICE_INPUT" -j ACCEPT
`
	m := parseSave(out)
	if len(m["INPUT"]) != 3 || m["AFERO_FORWARD_WHITELIST"] == nil || len(m["AFERO_FORWARD_WHITELIST"]) != 0 {
		t.Fatalf("parseSave = %q", m)
	}
	var ours []bool
	for _, l := range m["INPUT"] {
		ours = append(ours, isOurTarget(strings.Fields(l)))
	}
	if !slices.Equal(ours, []bool{true, false, false}) {
		t.Errorf("isOurTarget = %v", ours)
	}
}

func TestNFTRulesShape(t *testing.T) {
	p, _ := Policy{Uplinks: []string{"eth0"}, DNSQueue: QueueHook{Enabled: true, Num: 1}}.Normalize()
	count := func(rules []nftRule) map[string]int {
		m := map[string]int{}
		for _, r := range rules {
			m[r.chain]++
		}
		return m
	}
	with, without := count(nftRules(p, QueueXT)), count(nftRules(p, QueueUnavailable))
	for _, c := range []string{ChainServiceInput, ChainForwardService} {
		if with[c] != without[c]+2 {
			t.Errorf("%s: %d rules with queue, %d without; want 2 more", c, with[c], without[c])
		}
	}
	for _, c := range append(Chains, "input", "output", "forward") {
		if with[c] == 0 {
			t.Errorf("chain %s has no rules", c)
		}
	}
	// Sets each whitelist chain looks up: only the static whitelist opens new inbound
	// connections; a LAN client's learned addresses (fwd) only forwarding.
	sets := map[string][]string{}
	for _, r := range nftRules(p, QueueXT) {
		for _, e := range r.exprs {
			if l, ok := e.(*expr.Lookup); ok && l.SetName != nftSetUplink {
				sets[r.chain] = append(sets[r.chain], l.SetName)
			}
		}
	}
	want := map[string][]string{
		ChainWhitelistIn:  {"static4", "static6"},
		ChainWhitelistOut: {"static4", "allow4", "static6", "allow6"},
		ChainForwardWL:    {"static4", "allow4", "fwd4", "static6", "allow6", "fwd6"},
	}
	for c, w := range want {
		if !slices.Equal(sets[c], w) {
			t.Errorf("%s looks up %v, want %v", c, sets[c], w)
		}
	}
}

func TestManagerNeedsSetup(t *testing.T) {
	f := New(nil, nil)
	if err := f.Allow(addr("198.18.0.1"), time.Second, false); !errors.Is(err, ErrNotSetUp) {
		t.Errorf("Allow before Setup: %v", err)
	}
	if err := f.Restore(); !errors.Is(err, ErrNotSetUp) {
		t.Errorf("Restore before Setup: %v", err)
	}
}
