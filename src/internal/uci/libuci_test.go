package uci

import (
	"bytes"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestAgainstLibuci compares this parser with a real `uci` binary on the
// table inputs and on thousands of generated ones. It runs only when
// UCI_BIN names a uci executable (on an OpenWrt device: UCI_BIN=/sbin/uci),
// because the stock tool is not part of this repository.
func TestAgainstLibuci(t *testing.T) {
	bin := os.Getenv("UCI_BIN")
	if bin == "" {
		t.Skip("set UCI_BIN to a stock uci binary to compare against libuci")
	}
	var inputs []string
	for _, c := range parseCases {
		inputs = append(inputs, c.in)
	}
	n := 3000
	if testing.Short() {
		n = 300
	}
	seed := int64(1)
	if v, err := strconv.ParseInt(os.Getenv("UCI_SEED"), 10, 64); err == nil {
		seed, n = v, 30000 // a longer run with another seed
	}
	rng := rand.New(rand.NewSource(seed))
	for i := 0; i < n; i++ {
		inputs = append(inputs, randomUCI(rng))
	}
	dir := t.TempDir()
	accepted := 0
	for i, in := range inputs {
		if err := os.WriteFile(filepath.Join(dir, "p"), []byte(in), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, cmd := range []string{"show", "export"} {
			want := runUCI(t, bin, dir, cmd)
			var got string
			pkg, err := Parse("p", "p", strings.NewReader(in))
			switch {
			case err != nil:
				pe, ok := err.(*ParseError)
				if !ok {
					t.Fatalf("input %d %q: %v", i, in, err)
				}
				got = pe.UCIMessage() + "\n"
			case cmd == "show":
				got = pkg.Show()
				accepted++
			default:
				got = pkg.Export()
			}
			if got != want {
				t.Fatalf("input %d %q: uci %s:\n got %q\nwant %q", i, in, cmd, got, want)
			}
		}
	}
	t.Logf("%d inputs (%d accepted) agree with %s", len(inputs), accepted, bin)
}

func runUCI(t *testing.T, bin, dir, cmd string) string {
	t.Helper()
	c := exec.Command(bin, "-c", dir, "-t", filepath.Join(dir, ".save"), cmd, "p")
	c.Args[0] = "uci" // libuci prefixes messages with argv[0]
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	_ = c.Run() // exit status 1 on a parse error; the message is compared
	return out.String()
}

// randomUCI builds a file from UCI fragments, valid and not, so the
// comparison explores quoting, separators, continuations and errors.
func randomUCI(rng *rand.Rand) string {
	pick := func(l []string) string { return l[rng.Intn(len(l))] }
	words := []string{
		"config", "c", "option", "o", "list", "l", "package", "p", "conf", "bogus",
		"iface", "wifi-iface", "a'b", "x\"y", "t#t", "n_1", "lan", "la-n", "cfg01b606",
		"'q v'", `"d \"q\""`, `a'b'"c"`, `'it'\''s'`, "v\\\n", "\\", "\\\\", `"\t"`,
		"'", `"`, "''", `""`, ";", " ; ", "#c", "# x", "\t", " ", "  ", "\r", "\r\n",
		"\x00", "\xff\xfe", "'multi\nline'", "\"a\\\nb\"", "\\\r\n", "1", "",
	}
	types := []string{"a", "t", "wifi-iface", "a$b", "x", "\"q\"", "'t'"}
	names := []string{"", "", "s", "s", "lan", "lan", "x_1", "'n'", "\"m\"", "cfg01b606", "cfg02e28e"}
	opts := []string{"o", "p", "dns", "'l'", "o_2"}
	parts := []string{"v", "v", "'v'", "1", "'w x'", `"y \"z\""`, `\t`, "a\\\nb", "'m\nl'", "''", `""`, "'it'\\''s'", "#c", "é"}
	seps := []string{" ", "\t", "  ", " ", "\t", " ", " ", " \t", " ", " \\\n "}
	ends := []string{"", "", "", "", "", "", "", "", "", "", "", "", " # c", ";", " ;", "'';", " ; option q r", "\r"}
	var b strings.Builder
	lines := 1 + rng.Intn(7)
	for i := 0; i < lines; i++ {
		switch {
		case i == 0 && rng.Intn(10) > 0:
			b.WriteString("config " + pick(types) + " " + pick(names))
		case rng.Intn(20) < 19:
			// a mostly well-formed command
			switch rng.Intn(6) {
			case 0:
				b.WriteString(pick([]string{"config", "c"}) + pick(seps) + pick(types) + pick(seps) + pick(names))
			case 1:
				b.WriteString("package " + pick([]string{"p", "q-1", "p", "q", "x.y"}))
			default:
				b.WriteString(pick([]string{"\toption", "\tlist", "o", "l", "  option"}) + pick(seps) + pick(opts) + pick(seps))
				for k := rng.Intn(3); k >= 0; k-- {
					b.WriteString(pick(parts))
				}
			}
			b.WriteString(pick(ends))
		default:
			if rng.Intn(4) > 0 {
				b.WriteString(pick([]string{"config", "option", "list", "package", "\tlist", "\toption"}) + " ")
			}
			for k := rng.Intn(6); k > 0; k-- {
				b.WriteString(pick(words))
				if rng.Intn(3) > 0 {
					b.WriteByte(" \t"[rng.Intn(2)])
				}
			}
		}
		if i < lines-1 || rng.Intn(3) > 0 {
			b.WriteByte('\n')
		}
	}
	return b.String()
}
