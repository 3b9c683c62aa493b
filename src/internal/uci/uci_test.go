package uci

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGolden: for each file captured from stock `uci`, our show and export
// renderings equal what `uci show` and `uci export` printed, byte for byte.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/config/*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden configs: %v", err)
	}
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			pkg, err := Load("testdata/config", name)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range []struct {
				ext, got string
			}{{"show", pkg.Show()}, {"export", pkg.Export()}} {
				want, err := os.ReadFile("testdata/" + name + "." + r.ext)
				if err != nil {
					t.Fatal(err)
				}
				if r.got != string(want) {
					t.Errorf("uci %s %s:\n got:\n%s\nwant:\n%s", r.ext, name, r.got, want)
				}
			}
		})
	}
}

// TestGoldenBad: each malformed file is rejected with the reason, line and
// byte that stock uci printed.
func TestGoldenBad(t *testing.T) {
	shows, err := filepath.Glob("testdata/bad/*.show")
	if err != nil || len(shows) == 0 {
		t.Fatalf("no golden bad files: %v", err)
	}
	for _, show := range shows {
		path := strings.TrimSuffix(show, ".show")
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile(show)
			if err != nil {
				t.Fatal(err)
			}
			pkg, err := Load("testdata/bad", name)
			if err == nil {
				t.Fatalf("accepted:\n%s", pkg.Show())
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("not a ParseError: %v", err)
			}
			if got := pe.UCIMessage() + "\n"; got != string(want) {
				t.Errorf("got %q, want %q", got, want)
			}
			if wantErr := path + ": " + strings.TrimSuffix(string(want), "\n"); err.Error() != wantErr {
				t.Errorf("Error() = %q, want %q", err.Error(), wantErr)
			}
		})
	}
}

// parseCases are libuci behaviours read in file.c and list.c; every
// expectation was checked against the stock uci binary (TestAgainstLibuci
// re-checks them when UCI_BIN is set).
var parseCases = []struct {
	name, in string
	show     string // uci show output, or
	err      string // uci's error message
}{
	{"semicolon after quoted word separates commands",
		"config a x\n\toption o 'v'; option p w\n",
		"p.x=a\np.x.o='v'\np.x.p='w'\n", ""},
	{"semicolon glued to an unquoted word ends the line",
		"config a x\n\toption o v; option p w\n",
		"p.x=a\np.x.o='v'\n", ""},
	{"semicolon after white space separates commands",
		"config a x\n\toption o v ;option p w ; list l 1 ;l l 2\n",
		"p.x=a\np.x.o='v'\np.x.p='w'\np.x.l='1' '2'\n", ""},
	{"semicolon before the newline leaves the newline as a command",
		"config a x\noption o 'v';\n", "", "uci: Parse error (invalid command) at line 2, byte 13"},
	{"semicolon at end of file", "config a x\noption o 'v';", "p.x=a\np.x.o='v'\n", ""},
	{"semicolon in the name slot of config leaves a word over",
		"config a ; option b c\n", "", "uci: Parse error (too many arguments) at line 1, byte 18"},
	{"backslash-newline continues a word",
		"config a x\n\toption o long\\\nvalue\n", "p.x=a\np.x.o='longvalue'\n", ""},
	{"continuation line starting with white space ends the word",
		"config a x\n\toption o v\\\n\tw\n", "", "uci: Parse error (too many arguments) at line 3, byte 15"},
	{"multi-line quoted values keep the newline",
		"config a x\n\toption o \"multi\nline\"\n\toption p 'also\nmulti'\n",
		"p.x=a\np.x.o='multi\nline'\np.x.p='also\nmulti'\n", ""},
	{"backslash outside quotes takes the next character",
		"config a x\noption o \\t\\\\\n", "p.x=a\np.x.o='t\\'\n", ""},
	{"backslash in a type", "config a\\b x\n", "p.x=ab\n", ""},
	{"package line is checked, not applied", "package p\nconfig a x\n", "p.x=a\n", ""},
	{"package name is a name", "package bad.name\nconfig a x\n", "",
		"uci: Parse error (invalid character in name field) at line 1, byte 17"},
	{"package without name: the newline is part of the word", "package\n", "",
		"uci: Parse error (invalid command) at line 1, byte 0"},
	{"comments after tokens",
		"config a x # c\n\toption o v # c\n\toption p v#c\n\tlist l a#b\n",
		"p.x=a\np.x.o='v'\np.x.p='v'\np.x.l='a'\n", ""},
	{"abbreviated commands", "c a x\no o v\nl l 1\np p\n", "p.x=a\np.x.o='v'\np.x.l='1'\n", ""},
	{"named section reopened keeps its place",
		"config a x\noption o 1\nconfig b y\nconfig a x\noption p 2\n",
		"p.x=a\np.x.o='1'\np.x.p='2'\np.y=b\n", ""},
	{"named section reopened with another type", "config a x\nconfig b x\n", "",
		"uci: Parse error (section of different type overwrites prior section with same name) at line 2, byte 11"},
	{"list after option of the same name joins it", "config a x\noption o v\nlist o w\n",
		"p.x=a\np.x.o='v' 'w'\n", ""},
	{"option after list replaces it", "config a x\nlist o w\noption o v\n", "p.x=a\np.x.o='v'\n", ""},
	{"empty option value neither adds nor deletes",
		"config a x\noption o v\noption o ''\noption e\n", "p.x=a\np.x.o='v'\n", ""},
	{"empty list items are kept", "config a x\nlist e\nlist l ''\n", "p.x=a\np.x.e=''\np.x.l=''\n", ""},
	{"option with two values", "config a x\noption o v w\n", "",
		"uci: Parse error (too many arguments) at line 2, byte 13"},
	{"option without name: newline is part of the word", "config a x\noption\n", "",
		"uci: Parse error (invalid command) at line 2, byte 0"},
	{"option name is a name", "config a x\noption 1-2 v\n", "",
		"uci: Parse error (invalid character in name field) at line 2, byte 11"},
	{"config at end of file without newline", "config a\noption o v\n\nconfig", "",
		"uci: Parse error (config without name) at line 3, byte 0"},
	{"last line without newline is not counted", "config", "",
		"uci: Parse error (config without name) at line 0, byte 0"},
	{"config without type", "config \n", "", "uci: Parse error (insufficient arguments) at line 1, byte 8"},
	{"unterminated double quote spans to EOF", "config a x\noption o \"unterminated\n", "",
		"uci: Parse error (EOF with unterminated \") at line 2, byte 23"},
	{"empty file", "", "", ""},
	{"comments and blank lines only", "\n\n# only comments\n   \n", "", ""},
	{"CRLF line ends", "config a x\r\n\toption o v\r\n", "p.x=a\np.x.o='v'\n", ""},
	{"anonymous sections count per type",
		"config t\nconfig u\nconfig t n\nconfig t\n",
		"p.@t[0]=t\np.@u[0]=u\np.n=t\np.@t[2]=t\n", ""},
	{"name reopens an anonymous section by its generated name",
		"config a\noption o v\nconfig a cfg01b606\noption p w\n",
		"p.@a[0]=a\np.@a[0].o='v'\np.@a[0].p='w'\n", ""},
	{"type of printable characters", "config a$%&b\n", "p.@a$%&b[0]=a$%&b\n", ""},
	{"invalid type character", "config \x01\n", "",
		"uci: Parse error (invalid character in type field) at line 1, byte 9"},
	{"quote in a value", "config a x\noption o 'it'\\''s'\n", "p.x=a\np.x.o='it'\\''s'\n", ""},
}

func TestParseCases(t *testing.T) {
	for _, c := range parseCases {
		t.Run(c.name, func(t *testing.T) {
			pkg, err := Parse("f", "p", strings.NewReader(c.in))
			if c.err != "" {
				var pe *ParseError
				if !errors.As(err, &pe) {
					t.Fatalf("want error %q, got %v", c.err, err)
				}
				if pe.UCIMessage() != c.err {
					t.Fatalf("got %q, want %q", pe.UCIMessage(), c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := pkg.Show(); got != c.show {
				t.Fatalf("show:\n got %q\nwant %q", got, c.show)
			}
		})
	}
}

func TestAccessors(t *testing.T) {
	pkg, err := Load("testdata/config", "network")
	if err != nil {
		t.Fatal(err)
	}
	eth := pkg.Section("ethnet")
	if eth == nil || eth.Type != "interface" || eth.Anonymous || eth.Line != 8 {
		t.Fatalf("ethnet = %+v", eth)
	}
	if v, ok := eth.Value("ifname"); !ok || v != "eth0" {
		t.Errorf("ifname = %q, %v", v, ok)
	}
	if o := eth.Get("metric"); o == nil || o.Line != 12 || o.IsList {
		t.Errorf("metric = %+v", o)
	}
	if _, ok := eth.Value("nosuch"); ok {
		t.Error("nosuch found")
	}
	modem := pkg.Section("modemnet")
	if o := modem.Get("dns"); o == nil || !o.IsList || strings.Join(o.Values, ",") != "198.18.0.53,198.18.1.53" {
		t.Errorf("dns = %+v", o)
	}
	if v, _ := modem.Value("dns"); v != "198.18.1.53" {
		t.Errorf("last dns = %q", v)
	}
	dev := pkg.Section("@device[0]")
	if dev == nil || !dev.Anonymous || dev.Name != "" {
		t.Fatalf("@device[0] = %+v", dev)
	}
	if got := pkg.SectionRef(dev); got != "@device[0]" {
		t.Errorf("SectionRef = %q", got)
	}
	if got := pkg.SectionRef(eth); got != "ethnet" {
		t.Errorf("SectionRef = %q", got)
	}
	if pkg.Section("@interface[-1]") != modem || pkg.Section("@[0]") != pkg.Sections[0] {
		t.Error("extended lookups")
	}
	for _, bad := range []string{"@interface[9]", "@interface", "@interface[x]", "nosuch", "@route[0"} {
		if pkg.Section(bad) != nil {
			t.Errorf("Section(%q) found", bad)
		}
	}
	if n := len(pkg.OfType("interface")); n != 4 {
		t.Errorf("OfType(interface) = %d", n)
	}
	if pkg.SectionRef(&Section{}) != "" {
		t.Error("ref of foreign section")
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir, "missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Load(dir, "../x"); err == nil {
		t.Error("path in name accepted")
	}
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, "d"); err == nil {
		t.Error("directory accepted")
	}
	big := strings.Repeat("# padding\n", MaxSize/10+1)
	if err := os.WriteFile(filepath.Join(dir, "big"), []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, "big"); !errors.Is(err, ErrTooLarge) {
		t.Errorf("big file: %v", err)
	}
	if _, err := Parse("big", "big", strings.NewReader(big)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("big stream: %v", err)
	}
}

func TestLongLines(t *testing.T) {
	// lines far beyond libuci's initial 32-byte buffer, and a NUL byte,
	// after which libuci drops the rest of what fgets read
	long := strings.Repeat("x", 5000)
	pkg, err := Parse("f", "p", strings.NewReader("config a s\noption o '"+long+"'\noption p ab\x00cd\n"))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := pkg.Section("s").Value("o"); v != long {
		t.Errorf("long value has %d bytes", len(v))
	}
	if v, _ := pkg.Section("s").Value("p"); v != "ab" {
		t.Errorf("value with NUL = %q", v)
	}
}

// FuzzParse: the parser never panics, and a successful parse exported and
// parsed again shows the same.
func FuzzParse(f *testing.F) {
	for _, c := range parseCases {
		f.Add([]byte(c.in))
	}
	files, _ := filepath.Glob("testdata/config/*")
	bad, _ := filepath.Glob("testdata/bad/*")
	for _, p := range append(files, bad...) {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		pkg, err := Parse("f", "p", strings.NewReader(string(in)))
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		show, exp := pkg.Show(), pkg.Export()
		if !exportSafe(pkg) {
			return
		}
		again, err := Parse("f", "p", strings.NewReader(exp))
		if err != nil {
			t.Fatalf("export does not parse: %v\n%s", err, exp)
		}
		if got := again.Show(); got != show {
			t.Fatalf("round trip changed show:\n got %q\nwant %q\nexport %q", got, show, exp)
		}
	})
}

// exportSafe: libuci's export writes section types unquoted, so a type
// holding a quote, backslash, '#' or ';' (all legal in types) does not read
// back the same; that is libuci's behaviour, kept here byte for byte.
func exportSafe(p *Package) bool {
	for _, s := range p.Sections {
		if strings.ContainsAny(s.Type, "'\"\\#;") {
			return false
		}
	}
	return true
}
