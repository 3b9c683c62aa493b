package selector

import (
	"strings"
	"testing"

	"github.com/afero/af-conn/internal/uplink"
)

func c(name string, k uplink.Kind, s uplink.State, oks int) Candidate {
	return Candidate{Name: name, Kind: k, Priority: DefaultPriority(k), State: s, Successes: oks}
}

func held(c Candidate) Candidate { c.Held = true; return c }

const (
	SS = uplink.ItfUpSS
	SU = uplink.ItfUpSU
	SF = uplink.ItfUpSF
	DX = uplink.ItfDownSX
	NS = uplink.ItfNotSuppSX
)

func TestSelect(t *testing.T) {
	E, W, M := uplink.Ethernet, uplink.WiFi, uplink.Cellular
	cases := []struct {
		name   string
		cands  []Candidate
		cur    string
		pref   int
		want   string
		reason string
	}{
		{"nothing up", []Candidate{c("eth", E, DX, 0), c("wifi", W, NS, 0)}, "", Automatic, "", "no uplink is up"},
		{"in-use lost, nothing else", []Candidate{c("eth", E, DX, 0)}, "eth", Automatic, "", "eth lost"},
		{"startup: unknown by priority", []Candidate{c("eth", E, SU, 0), c("wifi", W, SU, 0)}, "", Automatic, "eth", "best uplink"},
		{"in-use fresh keeps its first probe round", []Candidate{{Name: "eth", Kind: E, Priority: 10, State: SU, Fresh: true}, c("wwan", M, SS, 1)}, "eth", Automatic, "eth", "first probe"},
		{"in-use unknown after a failure gives way", []Candidate{c("eth", E, SU, 0), c("wwan", M, SS, 1)}, "eth", Automatic, "wwan", ""},
		{"proven beats unproven priority", []Candidate{c("eth", E, SU, 0), c("wifi", W, SS, 1)}, "", Automatic, "wifi", ""},
		{"carrier loss: in-use down, proven standby", []Candidate{c("eth", E, DX, 0), c("wifi", W, SS, 9)}, "eth", Automatic, "wifi", "eth is down"},
		{"silent failure: in-use failing, standby proven", []Candidate{c("eth", E, SF, 0), c("wifi", W, SS, 9)}, "eth", Automatic, "wifi", "wifi is ITFUP_SS, eth is ITFUP_SF"},
		{"fail back waits for recover_count", []Candidate{c("eth", E, SS, 2), c("wifi", W, SS, 50)}, "wifi", Automatic, "wifi", "2 of 3"},
		{"fail back after recover_count", []Candidate{c("eth", E, SS, 3), c("wifi", W, SS, 50)}, "wifi", Automatic, "eth", "fail back"},
		{"lossy preferred still proven: stay", []Candidate{c("eth", E, SS, 0), c("wifi", W, SS, 50)}, "eth", Automatic, "eth", "still the best"},
		{"all failing: keep current", []Candidate{c("eth", E, SF, 0), c("wifi", W, SF, 0)}, "wifi", Automatic, "wifi", "every uplink is failing"},
		{"unknown beats failing", []Candidate{c("eth", E, SU, 0), c("wifi", W, SF, 0)}, "wifi", Automatic, "eth", ""},
		{"cellular only when nothing better is proven", []Candidate{c("eth", E, SF, 0), c("wifi", W, SF, 0), c("wwan", M, SS, 3)}, "eth", Automatic, "wwan", ""},
		{"cellular kept while wifi only unknown", []Candidate{c("wifi", W, SU, 0), c("wwan", M, SS, 3)}, "wwan", Automatic, "wwan", "still the best"},
		{"cellular left once wifi proven enough", []Candidate{c("wifi", W, SS, 3), c("wwan", M, SS, 30)}, "wwan", Automatic, "wifi", "fail back"},
		{"all dead then one returns", []Candidate{c("eth", E, DX, 0), c("wifi", W, SU, 0)}, "", Automatic, "wifi", ""},
		{"manual preference for wifi while proven", []Candidate{c("eth", E, SS, 9), c("wifi", W, SS, 1)}, "eth", int(W), "wifi", "manual preference"},
		{"manual preference ignored while not proven", []Candidate{c("eth", E, SS, 9), c("wifi", W, SF, 0)}, "eth", int(W), "eth", ""},
		{"manual preference for cellular", []Candidate{c("eth", E, SS, 9), c("wwan", M, SS, 1)}, "eth", int(M), "wwan", "cellular"},
		{"fail back to a held uplink waits", []Candidate{held(c("eth", E, SS, 9)), c("wifi", W, SS, 50)}, "wifi", Automatic, "wifi", "fail-back held"},
		{"fail back to the next one not held", []Candidate{held(c("eth", E, SS, 9)), c("wifi", W, SS, 3), c("wwan", M, SS, 50)}, "wwan", Automatic, "wifi", "fail back to preferred wifi"},
		{"next one not held still counts its successes", []Candidate{held(c("eth", E, SS, 9)), c("wifi", W, SS, 1), c("wwan", M, SS, 50)}, "wwan", Automatic, "wwan", "preferred wifi has 1 of 3"},
		{"held uplink used when the current fails", []Candidate{held(c("eth", E, SS, 9)), c("wifi", W, SF, 0)}, "wifi", Automatic, "eth", ""},
		{"held uplink used when nothing is selected", []Candidate{held(c("eth", E, SS, 1)), c("wifi", W, SU, 0)}, "", Automatic, "eth", ""},
		{"held uplink in use stays", []Candidate{held(c("eth", E, SS, 1)), c("wifi", W, SS, 9)}, "eth", Automatic, "eth", "still the best"},
		{"priority from configuration", []Candidate{{Name: "eth", Kind: E, Priority: 30, State: SS, Successes: 9}, {Name: "wifi", Kind: W, Priority: 5, State: SS, Successes: 9}}, "", Automatic, "wifi", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := Select(Input{Candidates: tc.cands, Current: tc.cur, Preference: tc.pref, RecoverCount: 3})
			if d.Selected != tc.want {
				t.Fatalf("selected %q, want %q (reason %q)", d.Selected, tc.want, d.Reason)
			}
			if !strings.Contains(d.Reason, tc.reason) {
				t.Fatalf("reason %q lacks %q", d.Reason, tc.reason)
			}
			if d.Switch(tc.cur) != (tc.want != tc.cur) {
				t.Fatalf("Switch wrong")
			}
		})
	}
}

// A lossy preferred uplink alternating successes and single failures must
// never be left: the state machine keeps it ITFUP_SS, and selection only
// fails back once the other has enough successes.
func TestNoFlapUnderAlternation(t *testing.T) {
	cur := "eth"
	for i := 0; i < 100; i++ {
		oks := i % 3 // successes reset by occasional failures
		d := Select(Input{Candidates: []Candidate{c("eth", uplink.Ethernet, SS, oks), c("wifi", uplink.WiFi, SS, 100)}, Current: cur, Preference: Automatic, RecoverCount: 3})
		if d.Selected != "eth" {
			t.Fatalf("round %d: switched to %q: %s", i, d.Selected, d.Reason)
		}
	}
}

func TestValidPreference(t *testing.T) {
	for v, want := range map[int]bool{-2: false, -1: true, 0: true, 1: true, 2: true, 3: false} {
		if ValidPreference(v) != want {
			t.Errorf("%d: %v", v, !want)
		}
	}
}
