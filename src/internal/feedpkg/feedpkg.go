// Package feedpkg reads af-conn's package definition from its OpenWrt feed Makefile
// (openwrt/af-conn/Makefile) and lays out the installed files the way the OpenWrt build does,
// so that `make ipk` packs without the SDK exactly what the SDK would.
//
// It understands the plain subset of make that file keeps to: NAME:=value (also =, ?=, +=),
// define/endef, $(NAME), $(if COND,THEN,ELSE), backslash continuations, and in the install
// recipe $(INSTALL_DIR), $(INSTALL_BIN), $(INSTALL_CONF), $(INSTALL_DATA) and
// $(call GoPackage/Package/Install/Bin,$(1)). Anything else it meets where it needs a value is
// an error naming the line, never a guess.
package feedpkg

import (
	"fmt"
	"strings"
)

// GoArchDepends is what lang/golang's golang-values.mk sets GO_ARCH_DEPENDS to.
const GoArchDepends = "@(aarch64||arm||i386||i686||loongarch64||mips||mips64||mips64el||mipsel||riscv64||x86_64)"

// Definition is the package as the feed Makefile defines it.
type Definition struct {
	Name, Version, Release       string
	License, LicenseFiles        string
	Maintainer                   string
	Section, Title, URL          string
	Depends                      string // DEPENDS as written, expanded
	Description                  string
	Conffiles                    []string
	GoBuildPkg, GoInstallBinPath string
	GoLDFlagsX                   []string // GO_PKG_LDFLAGS_X: the -X definitions
	GoTags                       string   // GO_PKG_TAGS: go build -tags, comma-separated
	GoGCFlags                    string   // GO_PKG_GCFLAGS: go build -gcflags
	Install                      []Step
}

// Step is one command of the package's install recipe.
type Step struct {
	Line int
	Op   string   // "dir", "gobin", or the mode of an install: "bin", "conf", "data"
	Args []string // expanded arguments: directories, or sources then the destination
}

// FullVersion is the package version as OpenWrt writes it: PKG_VERSION-PKG_RELEASE.
func (d *Definition) FullVersion() string {
	if d.Release == "" {
		return d.Version
	}
	return d.Version + "-" + d.Release
}

// APKVersion is the version OpenWrt gives the package in an apk build (package-defaults.mk
// with CONFIG_USE_APK): PKG_VERSION-rPKG_RELEASE, apk's form of a release.
func (d *Definition) APKVersion() string {
	if d.Release == "" {
		return d.Version
	}
	return d.Version + "-r" + d.Release
}

type variable struct {
	value string // unexpanded, as make keeps a recursively expanded variable
	line  int
}

type makefile struct {
	vars    map[string]variable
	defines map[string]variable
	env     map[string]string
}

// Parse reads the feed Makefile. env gives the values the OpenWrt build would supply:
// CURDIR (the Makefile's directory) and the CONFIG_ symbols; anything not set there or in the
// file is empty for CONFIG_ symbols and an error otherwise.
func Parse(src []byte, env map[string]string) (*Definition, error) {
	m := &makefile{vars: map[string]variable{}, defines: map[string]variable{}, env: env}
	if err := m.read(string(src)); err != nil {
		return nil, err
	}
	d := &Definition{}
	for _, f := range []struct {
		dst      *string
		name     string
		required bool
	}{
		{&d.Name, "PKG_NAME", true},
		{&d.Version, "PKG_VERSION", true},
		{&d.Release, "PKG_RELEASE", false},
		{&d.License, "PKG_LICENSE", false},
		{&d.LicenseFiles, "PKG_LICENSE_FILES", false},
		{&d.Maintainer, "PKG_MAINTAINER", false},
		{&d.GoBuildPkg, "GO_PKG_BUILD_PKG", true},
		{&d.GoInstallBinPath, "GO_PKG_INSTALL_BIN_PATH", false},
	} {
		v, ok, err := m.value(f.name)
		if err != nil {
			return nil, err
		}
		*f.dst = strings.TrimSpace(v)
		if f.required && *f.dst == "" {
			if ok {
				return nil, fmt.Errorf("line %d: %s is empty", m.vars[f.name].line, f.name)
			}
			return nil, fmt.Errorf("%s is not set", f.name)
		}
	}
	if d.GoInstallBinPath == "" {
		d.GoInstallBinPath = "/usr/bin" // golang-package.mk's default
	}
	x, _, err := m.value("GO_PKG_LDFLAGS_X")
	if err != nil {
		return nil, err
	}
	d.GoLDFlagsX = strings.Fields(x)
	tags, _, err := m.value("GO_PKG_TAGS")
	if err != nil {
		return nil, err
	}
	d.GoTags = strings.TrimSpace(tags)
	gcflags, _, err := m.value("GO_PKG_GCFLAGS")
	if err != nil {
		return nil, err
	}
	d.GoGCFlags = strings.TrimSpace(gcflags)

	pkg := "Package/" + d.Name
	body, ok := m.defines[pkg]
	if !ok {
		return nil, fmt.Errorf("no define %s", pkg)
	}
	fields, err := m.assignments(body)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		dst  *string
		name string
	}{{&d.Section, "SECTION"}, {&d.Title, "TITLE"}, {&d.URL, "URL"}, {&d.Depends, "DEPENDS"}} {
		if v, ok := fields[f.name]; ok {
			if *f.dst, err = m.expand(v.value, v.line); err != nil {
				return nil, err
			}
			*f.dst = strings.TrimSpace(*f.dst)
		}
	}
	for _, script := range []string{"preinst", "postinst", "prerm", "postrm"} {
		if v, ok := m.defines[pkg+"/"+script]; ok {
			return nil, fmt.Errorf("line %d: %s/%s: own maintainer scripts are not supported", v.line, pkg, script)
		}
	}
	if v, ok := m.defines[pkg+"/description"]; ok {
		if d.Description, err = m.expand(v.value, v.line); err != nil {
			return nil, err
		}
	}
	if v, ok := m.defines[pkg+"/conffiles"]; ok {
		text, err := m.expand(v.value, v.line)
		if err != nil {
			return nil, err
		}
		d.Conffiles = strings.Fields(text)
	}
	v, ok := m.defines[pkg+"/install"]
	if !ok {
		return nil, fmt.Errorf("no define %s/install", pkg)
	}
	if d.Install, err = m.install(v); err != nil {
		return nil, err
	}
	return d, nil
}

// logicalLines joins backslash continuations as make does (the backslash, the newline and the
// white space around them become one space) and numbers each line by where it starts.
func logicalLines(text string, first int) (lines []string, numbers []int) {
	raw := strings.Split(text, "\n")
	for i := 0; i < len(raw); i++ {
		line, n := raw[i], first+i
		for strings.HasSuffix(line, "\\") && i+1 < len(raw) {
			i++
			line = strings.TrimRight(strings.TrimSuffix(line, "\\"), " \t") + " " + strings.TrimLeft(raw[i], " \t")
		}
		lines, numbers = append(lines, line), append(numbers, n)
	}
	return lines, numbers
}

func (m *makefile) read(src string) error {
	raw := strings.Split(src, "\n")
	for i := 0; i < len(raw); i++ {
		n := i + 1
		if t := strings.TrimSpace(raw[i]); strings.HasPrefix(t, "define ") {
			// The body is kept as written (continuations too) and read where it is used.
			name := strings.TrimSpace(strings.TrimPrefix(t, "define "))
			start := i + 1
			for i++; i < len(raw) && strings.TrimSpace(raw[i]) != "endef"; i++ {
			}
			if i >= len(raw) {
				return fmt.Errorf("line %d: define %s has no endef", n, name)
			}
			m.defines[name] = variable{value: strings.Join(raw[start:i], "\n"), line: start + 1}
			continue
		}
		line := raw[i]
		for strings.HasSuffix(line, "\\") && i+1 < len(raw) {
			i++
			line = strings.TrimRight(strings.TrimSuffix(line, "\\"), " \t") + " " + strings.TrimLeft(raw[i], " \t")
		}
		t := strings.TrimSpace(line)
		switch {
		case t == "" || strings.HasPrefix(t, "#"):
		case strings.HasPrefix(t, "include "), strings.HasPrefix(t, "$(eval "):
			// the OpenWrt build's own machinery, which the definition does not depend on
		case strings.HasPrefix(t, "ifeq"), strings.HasPrefix(t, "ifneq"), strings.HasPrefix(t, "ifdef"),
			strings.HasPrefix(t, "ifndef"), strings.HasPrefix(t, "else"), strings.HasPrefix(t, "endif"),
			strings.HasPrefix(t, "export "), strings.HasPrefix(t, "override "):
			return fmt.Errorf("line %d: %q: conditionals and directives are not supported here", n, t)
		default:
			if err := m.assign(m.vars, t, n); err != nil {
				return err
			}
		}
	}
	return nil
}

// assign records NAME:=value, NAME=value, NAME?=value or NAME+=value. Values are kept
// unexpanded and expanded where used, which is what make does for the plain definitions here.
func (m *makefile) assign(vars map[string]variable, t string, n int) error {
	eq := strings.IndexByte(t, '=')
	if eq < 1 {
		return fmt.Errorf("line %d: %q: not an assignment", n, t)
	}
	name, op := t[:eq], "="
	if c := name[len(name)-1]; c == ':' || c == '?' || c == '+' {
		name, op = name[:len(name)-1], string(c)+"="
	}
	name = strings.TrimSpace(name)
	if name == "" || strings.ContainsAny(name, " \t$()") {
		return fmt.Errorf("line %d: %q: not an assignment", n, t)
	}
	value := strings.TrimSpace(t[eq+1:])
	old, exists := vars[name]
	switch {
	case op == "?=" && exists:
	case op == "+=" && exists:
		vars[name] = variable{value: old.value + " " + value, line: old.line}
	default:
		vars[name] = variable{value: value, line: n}
	}
	return nil
}

// assignments reads the NAME:=value lines of a define such as Package/af-conn.
func (m *makefile) assignments(body variable) (map[string]variable, error) {
	out := map[string]variable{}
	lines, numbers := logicalLines(body.value, body.line)
	for i, line := range lines {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		if err := m.assign(out, t, numbers[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// value is the expanded value of a variable of the file.
func (m *makefile) value(name string) (string, bool, error) {
	v, ok := m.vars[name]
	if !ok {
		return "", false, nil
	}
	s, err := m.expand(v.value, v.line)
	return s, true, err
}

const maxDepth = 32

func (m *makefile) expand(s string, line int) (string, error) {
	return m.expandDepth(s, line, 0)
}

func (m *makefile) expandDepth(s string, line, depth int) (string, error) {
	if depth > maxDepth {
		return "", fmt.Errorf("line %d: variables refer to each other too deeply", line)
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 >= len(s) {
			return "", fmt.Errorf("line %d: lone $ at the end of %q", line, s)
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '(', '{':
		default:
			return "", fmt.Errorf("line %d: $%c: only $(NAME) references are supported", line, s[i+1])
		}
		end, err := matching(s, i+1)
		if err != nil {
			return "", fmt.Errorf("line %d: %w", line, err)
		}
		ref := s[i+2 : end]
		i = end
		out, err := m.reference(ref, line, depth)
		if err != nil {
			return "", err
		}
		b.WriteString(out)
	}
	return b.String(), nil
}

// matching finds the parenthesis or brace closing the one at s[open].
func matching(s string, open int) (int, error) {
	closer := map[byte]byte{'(': ')', '{': '}'}[s[open]]
	depth := 0
	for j := open; j < len(s); j++ {
		switch s[j] {
		case s[open]:
			depth++
		case closer:
			depth--
			if depth == 0 {
				return j, nil
			}
		}
	}
	return 0, fmt.Errorf("unbalanced %c in %q", s[open], s)
}

func (m *makefile) reference(ref string, line, depth int) (string, error) {
	if strings.HasPrefix(ref, "if ") {
		args, err := splitArgs(strings.TrimPrefix(ref, "if "))
		if err != nil || len(args) < 2 || len(args) > 3 {
			return "", fmt.Errorf("line %d: $(if %s): want $(if COND,THEN[,ELSE])", line, strings.TrimPrefix(ref, "if "))
		}
		cond, err := m.expandDepth(strings.TrimSpace(args[0]), line, depth+1)
		if err != nil {
			return "", err
		}
		if strings.TrimSpace(cond) != "" {
			return m.expandDepth(args[1], line, depth+1)
		}
		if len(args) == 3 {
			return m.expandDepth(args[2], line, depth+1)
		}
		return "", nil
	}
	if strings.ContainsAny(ref, " \t,$") {
		return "", fmt.Errorf("line %d: $(%s): make functions other than if are not supported", line, ref)
	}
	if v, ok := m.env[ref]; ok {
		return v, nil
	}
	if v, ok := m.vars[ref]; ok {
		return m.expandDepth(v.value, v.line, depth+1)
	}
	switch {
	case ref == "GO_ARCH_DEPENDS":
		return GoArchDepends, nil
	case strings.HasPrefix(ref, "CONFIG_"):
		return "", nil // a symbol not selected
	}
	return "", fmt.Errorf("line %d: $(%s) is not defined", line, ref)
}

// splitArgs splits a function's arguments at the commas outside parentheses.
func splitArgs(s string) ([]string, error) {
	var args []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(', '{':
			depth++
		case ')', '}':
			depth--
			if depth < 0 {
				return nil, fmt.Errorf("unbalanced parentheses in %q", s)
			}
		case ',':
			if depth == 0 {
				args = append(args, s[start:i])
				start = i + 1
			}
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("unbalanced parentheses in %q", s)
	}
	return append(args, s[start:]), nil
}

var installOps = map[string]string{
	"$(INSTALL_DIR)":  "dir",
	"$(INSTALL_BIN)":  "bin",
	"$(INSTALL_CONF)": "conf",
	"$(INSTALL_DATA)": "data",
}

// install reads the install recipe. $(1), the package root, expands to nothing, so
// destinations come out as absolute paths on the target.
func (m *makefile) install(body variable) ([]Step, error) {
	var steps []Step
	lines, numbers := logicalLines(body.value, body.line)
	for i, line := range lines {
		t, n := strings.TrimSpace(line), numbers[i]
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		if t == "$(call GoPackage/Package/Install/Bin,$(1))" {
			steps = append(steps, Step{Line: n, Op: "gobin"})
			continue
		}
		words := strings.Fields(t)
		op, ok := installOps[words[0]]
		if !ok {
			return nil, fmt.Errorf("line %d: %q: not an install command this reader knows", n, t)
		}
		if len(words) < 2 || (op != "dir" && len(words) < 3) {
			return nil, fmt.Errorf("line %d: %q: missing arguments", n, t)
		}
		step := Step{Line: n, Op: op}
		for j, w := range words[1:] {
			arg, err := m.expand(strings.ReplaceAll(w, "$(1)", ""), n)
			if err != nil {
				return nil, err
			}
			target := op == "dir" || j == len(words)-2
			if target && !strings.HasPrefix(w, "$(1)/") {
				return nil, fmt.Errorf("line %d: %q: install destinations must start with $(1)/", n, w)
			}
			step.Args = append(step.Args, arg)
		}
		steps = append(steps, step)
	}
	return steps, nil
}
