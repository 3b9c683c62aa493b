// Package uci reads OpenWrt UCI configuration files exactly as libuci reads
// them (what it accepts, what it rejects and where it says the error is)
// and renders them the way the `uci show` and `uci export` commands print
// them. It owns the syntax only; what the options mean is internal/config's.
package uci

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Package is one UCI file: its sections in file order.
type Package struct {
	Name     string
	Sections []*Section

	byID map[string]*Section // libuci's section names, first wins; set by Parse
}

// Section is a `config TYPE ['NAME']` block. Name is "" for an anonymous
// section; Line is the line of the config command that opened it.
type Section struct {
	Type, Name string
	Anonymous  bool
	Line       int
	Options    []*Option

	id   string             // libuci's element name (generated cfgNNHHHH when anonymous)
	opts map[string]*Option // Options by name, set by Parse
}

// Option is an `option` (IsList false, one value) or a `list` (IsList true,
// one value per list line). Line is where it was last set.
type Option struct {
	Name   string
	Values []string
	IsList bool
	Line   int
}

func (p *Package) add(s *Section) {
	p.Sections = append(p.Sections, s)
	if _, dup := p.byID[s.id]; !dup {
		p.byID[s.id] = s
	}
}

func (s *Section) addOption(o *Option) {
	if s.opts == nil {
		s.opts = map[string]*Option{}
	}
	s.opts[o.Name] = o
	s.Options = append(s.Options, o)
}

// Load parses the UCI file dir/name as package name. A missing file gives an
// error for which errors.Is(err, os.ErrNotExist) holds.
func Load(dir, name string) (*Package, error) {
	if !validStr(name, false, true) || strings.Contains(name, "/") {
		return nil, fmt.Errorf("uci: invalid config name %q", name)
	}
	path := filepath.Join(dir, name)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("read %s: not a regular file", path)
	}
	if st.Size() > MaxSize {
		return nil, fmt.Errorf("%s: %w", path, ErrTooLarge)
	}
	return Parse(path, name, f)
}

// Get returns the option called name, or nil.
func (s *Section) Get(name string) *Option {
	if s.opts != nil {
		return s.opts[name]
	}
	for _, o := range s.Options {
		if o.Name == name {
			return o
		}
	}
	return nil
}

// Value returns the value of option name (the last item of a list) and
// whether the section has it.
func (s *Section) Value(name string) (string, bool) {
	o := s.Get(name)
	if o == nil || len(o.Values) == 0 {
		return "", false
	}
	return o.Values[len(o.Values)-1], true
}

// Section finds a section by the name `uci show` uses for it: a named
// section's name, or "@type[N]" (N counted from 0 among sections of that
// type, negative N from the end, "@[N]" counting all sections) as libuci's
// extended lookup does. It returns nil if there is none.
func (p *Package) Section(name string) *Section {
	if strings.HasPrefix(name, "@") {
		return p.extSection(name[1:])
	}
	for _, s := range p.Sections {
		if !s.Anonymous && s.Name == name {
			return s
		}
	}
	return nil
}

func (p *Package) extSection(ref string) *Section {
	open := strings.IndexByte(ref, '[')
	if open < 0 || !strings.HasSuffix(ref, "]") {
		return nil
	}
	typ := ref[:open]
	idx, err := strconv.Atoi(ref[open+1 : len(ref)-1])
	if err != nil {
		return nil
	}
	var of []*Section
	if typ == "" {
		of = p.Sections
	} else {
		of = p.OfType(typ)
	}
	if idx < 0 {
		idx += len(of)
	}
	if idx < 0 || idx >= len(of) {
		return nil
	}
	return of[idx]
}

// OfType returns the sections of type t in file order.
func (p *Package) OfType(t string) []*Section {
	var out []*Section
	for _, s := range p.Sections {
		if s.Type == t {
			out = append(out, s)
		}
	}
	return out
}

// SectionRef names s as `uci show` does: its name, or "@type[N]" when
// anonymous. It returns "" if s is not in p.
func (p *Package) SectionRef(s *Section) string {
	n := 0
	for _, x := range p.Sections {
		if x == s {
			if s.Anonymous {
				return "@" + s.Type + "[" + strconv.Itoa(n) + "]"
			}
			return s.Name
		}
		if x.Type == s.Type {
			n++
		}
	}
	return ""
}

// Show renders the package as `uci show NAME` prints it.
func (p *Package) Show() string {
	var b strings.Builder
	idx := map[string]int{} // cli.c's type list: sections seen per type
	for _, s := range p.Sections {
		ref := s.Name
		if s.Anonymous {
			ref = "@" + s.Type + "[" + strconv.Itoa(idx[s.Type]) + "]"
		}
		idx[s.Type]++
		fmt.Fprintf(&b, "%s.%s=%s\n", p.Name, ref, s.Type)
		for _, o := range s.Options {
			fmt.Fprintf(&b, "%s.%s.%s=", p.Name, ref, o.Name)
			for i, v := range o.shown() {
				if i > 0 {
					b.WriteByte(' ')
				}
				b.WriteString(Quote(v))
			}
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// shown is what libuci holds for o: every item of a list, the one value of
// an option.
func (o *Option) shown() []string {
	if o.IsList || len(o.Values) <= 1 {
		return o.Values
	}
	return o.Values[len(o.Values)-1:]
}

// Export renders the package as `uci export NAME` prints it (anonymous
// sections unnamed, every value single-quoted).
func (p *Package) Export() string {
	var b strings.Builder
	b.WriteString("package " + escape(p.Name) + "\n")
	for _, s := range p.Sections {
		b.WriteString("\nconfig " + escape(s.Type))
		if !s.Anonymous {
			b.WriteString(" '" + escape(s.Name) + "'")
		}
		b.WriteByte('\n')
		for _, o := range s.Options {
			kw := "\toption "
			if o.IsList {
				kw = "\tlist "
			}
			for _, v := range o.shown() {
				b.WriteString(kw + escape(o.Name) + " '" + escape(v) + "'\n")
			}
		}
	}
	b.WriteByte('\n')
	return b.String()
}

// Quote single-quotes v as uci show prints values, for UCI and for a shell;
// a quote inside v is written as
//
//	'\''
func Quote(v string) string {
	return "'" + escape(v) + "'"
}

func escape(v string) string {
	return strings.ReplaceAll(v, "'", `'\''`)
}
