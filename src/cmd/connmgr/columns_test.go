package main

import (
	"math/rand/v2"
	"strings"
	"testing"
	"text/tabwriter"
)

// TestTabTableAsTabwriter: the layout is text/tabwriter's, byte for byte, for the status
// table and for random tables of ragged lines and widths.
func TestTabTableAsTabwriter(t *testing.T) {
	check := func(text string) {
		t.Helper()
		var want, got strings.Builder
		tw := tabwriter.NewWriter(&want, 0, 0, 2, ' ', 0)
		tw.Write([]byte(text))
		tw.Flush()
		tt := newTabTable(&got)
		tt.Write([]byte(text))
		tt.Flush()
		if got.String() != want.String() {
			t.Fatalf("text %q:\ngot\n%s\nwant (tabwriter)\n%s", text, got.String(), want.String())
		}
	}
	check("")
	check("connmgr 1, up 1s\nnetwork type:\tx\npreferred type:\ty\n")
	check("  NETWORK\tDEVICE\tTYPE\n* ethnet\teth0\tethernet\n  modemnet\twwan0\tcellular\n")
	check("a\tb\tc\n\nd\te\nlong cell\t\tf\tg\n\t\t\n")
	check("é\tü\nnaïve\tx\n")
	r := rand.New(rand.NewPCG(1, 2))
	cells := []string{"", "a", "bb", "ccc dd", "ünï", "xxxxxxxxxx"}
	for range 500 {
		var b strings.Builder
		for range r.IntN(6) {
			for k := r.IntN(5); k > 0; k-- {
				b.WriteString(cells[r.IntN(len(cells))])
				b.WriteByte('\t')
			}
			b.WriteString(cells[r.IntN(len(cells))])
			b.WriteByte('\n')
		}
		check(b.String())
	}
}
