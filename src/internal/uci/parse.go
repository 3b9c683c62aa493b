package uci

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// The parser below is a port of libuci's file.c (uci_import, uci_parse_line,
// next_arg, parse_str, parse_*_quote, parse_backslash, uci_getln). libuci
// parses in place inside a line buffer that it grows by doubling, splits
// commands with strtok(3), and reports error positions as offsets into that
// buffer. Its accepted language has corners that only follow from those
// mechanics (a ';' glued to an unquoted word ends the line, a backslash
// continuation appends the next line at the backslash, bytes after a NUL in
// a line are dropped), so the port keeps the same buffer and the same steps
// rather than re-deriving a grammar. Comments name the C function each piece
// mirrors.

// errParse is the panic value the parser uses the way libuci uses longjmp
// (UCI_THROW); Parse recovers only this value.
type errParse struct{}

type parser struct {
	file string
	in   []byte // whole input
	off  int    // read offset in in (the FILE position)
	eof  bool   // feof(3)

	buf    []byte // pctx->buf; len(buf) is pctx->bufsz
	filled int    // pctx->buf_filled
	pos    int    // pctx->pos
	line   int    // pctx->line: lines read that ended in '\n'
	lastNL bool   // whether the last line read ended in '\n'

	reason  string
	errByte int

	pkg     *Package
	section *Section
	nsect   int // package->n_section
}

// Parse reads one UCI file the way libuci's uci_load does (strict mode, as
// `uci` runs by default) and returns its package named pkgName. file is only
// used in error messages. Syntax errors are *ParseError with libuci's reason,
// line and byte. Input larger than MaxSize is rejected.
func Parse(file, pkgName string, r io.Reader) (*Package, error) {
	in, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	if len(in) > MaxSize {
		return nil, fmt.Errorf("%s: %w", file, ErrTooLarge)
	}
	p := &parser{file: file, in: in, pkg: &Package{Name: pkgName, byID: map[string]*Section{}}}
	if err := p.run(); err != nil {
		return nil, err
	}
	return p.pkg, nil
}

// MaxSize is the largest UCI file Parse accepts; real configuration files
// are a few KiB, so anything near this is a mistake, not a config.
const MaxSize = 1 << 20

// ErrTooLarge is returned (wrapped) for input over MaxSize.
var ErrTooLarge = errors.New("uci: file larger than 1 MiB")

// ParseError is a UCI syntax error, positioned as libuci positions it: Line
// counts the newline-terminated lines read so far (a last line without a
// newline is not counted), Byte is the offset in libuci's line buffer, which
// spans all physical lines joined by a continuation or a multi-line quote.
type ParseError struct {
	File   string
	Line   int
	Byte   int
	Reason string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("%s: %s", e.File, e.UCIMessage())
}

// UCIMessage is the message exactly as the `uci` tool prints it.
func (e *ParseError) UCIMessage() string {
	return fmt.Sprintf("uci: Parse error (%s) at line %d, byte %d", e.Reason, e.Line, e.Byte)
}

// run is uci_import's loop.
func (p *parser) run() (err error) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(errParse); !ok {
				panic(r)
			}
			err = &ParseError{File: p.file, Line: p.line, Byte: p.errByte, Reason: p.reason}
		}
	}()
	for !p.eof {
		p.pos = 0
		p.getln(0)
		if p.buf[0] != 0 {
			p.parseLine()
		}
	}
	return nil
}

func (p *parser) fail(reason string) {
	p.reason = reason
	p.errByte = p.pos
	panic(errParse{})
}

// fgets emulates fgets(3) writing at buf[ofs:] with room n: it reads up to
// n-1 bytes, stopping after a newline, and NUL-terminates. It reports false
// where fgets returns NULL (end of file before any byte).
func (p *parser) fgets(ofs, n int) bool {
	if p.off >= len(p.in) {
		p.eof = true
		return false
	}
	rest := p.in[p.off:]
	k := n - 1
	if k > len(rest) {
		k = len(rest)
	}
	if i := bytes.IndexByte(rest[:k], '\n'); i >= 0 {
		k = i + 1
	}
	copy(p.buf[ofs:], rest[:k])
	p.buf[ofs+k] = 0
	p.off += k
	return true
}

func (p *parser) grow() {
	p.buf = append(p.buf, make([]byte, len(p.buf))...)
}

// getln is uci_getln: read the next line into the buffer at offset,
// growing the buffer until the line fits.
func (p *parser) getln(offset int) {
	if p.buf == nil {
		p.buf = make([]byte, 32) // LINEBUF
	}
	if offset >= len(p.buf)-1 {
		p.grow()
	}
	ofs := offset
	for {
		p.buf[ofs] = 0
		if !p.fgets(ofs, len(p.buf)-ofs) || p.buf[ofs] == 0 {
			return
		}
		ofs += cstrlen(p.buf[ofs:])
		p.filled = ofs
		if p.buf[ofs-1] == '\n' {
			p.line++
			p.lastNL = true
			return
		}
		p.lastNL = false
		p.grow()
	}
}

func cstrlen(b []byte) int {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return i
	}
	return len(b)
}

// cstr is the NUL-terminated string at buffer offset i.
func (p *parser) cstr(i int) string {
	return string(p.buf[i : i+cstrlen(p.buf[i:])])
}

func (p *parser) cur() byte { return p.buf[p.pos] }

// isspace is isspace(3) in the C locale.
func isspace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func (p *parser) skipWhitespace() {
	for p.cur() != 0 && isspace(p.cur()) {
		p.pos++
	}
}

// parseBackslash reports whether the character after a backslash is to be
// taken literally; a backslash ending the line joins the next line instead.
func (p *parser) parseBackslash() bool {
	p.pos++
	c := p.cur()
	if c == 0 || c == '\n' || (c == '\r' && p.buf[p.pos+1] == '\n' && p.buf[p.pos+2] == 0) {
		p.getln(p.pos)
		return false
	}
	return true
}

func (p *parser) addc(target *int) {
	p.buf[*target] = p.buf[p.pos]
	*target++
	p.pos++
}

// parseQuoted is parse_single_quote and parse_double_quote: a quoted part
// may span lines; only inside double quotes does a backslash escape.
func (p *parser) parseQuoted(target *int, q byte) {
	p.pos++
	for {
		switch c := p.cur(); {
		case c == q:
			p.pos++
			return
		case c == 0:
			p.getln(p.pos)
			if p.cur() == 0 {
				p.fail("EOF with unterminated " + string(q))
			}
		case c == '\\' && q == '"':
			if p.parseBackslash() {
				p.addc(target)
			}
		default:
			p.addc(target)
		}
	}
}

// parseStr is parse_str: one word, unquoted, quoted or joined from parts,
// decoded in place to target.
func (p *parser) parseStr(target *int) {
	next := true
loop:
	for {
		switch p.cur() {
		case '\'', '"':
			p.parseQuoted(target, p.cur())
		case '#':
			p.buf[p.pos] = 0
			break loop
		case 0:
			break loop
		case ';':
			next = false
			break loop
		case '\\':
			if p.parseBackslash() {
				p.addc(target)
			}
		default:
			p.addc(target)
		}
		if c := p.cur(); c == 0 || isspace(c) {
			break
		}
	}
	// an unquoted word stopped at white space: step over it, the
	// terminating NUL below may overwrite it
	if p.cur() != 0 && next {
		p.pos++
	}
	p.buf[*target] = 0
}

// nextArg is next_arg: the offset of the next argument's decoded string.
func (p *parser) nextArg(required, name, pkg bool) int {
	p.skipWhitespace()
	val := p.pos
	ptr := p.pos
	if p.cur() == ';' {
		p.buf[p.pos] = 0
		p.pos++
	} else {
		p.parseStr(&ptr)
	}
	if p.buf[val] == 0 {
		if required {
			p.fail("insufficient arguments")
		}
		return val
	}
	if name && !validStr(p.cstr(val), true, pkg) {
		p.fail("invalid character in name field")
	}
	return val
}

// assertEOL: in strict mode a command takes no extra argument.
func (p *parser) assertEOL() {
	p.skipWhitespace()
	if p.buf[p.nextArg(false, false, false)] != 0 {
		p.fail("too many arguments")
	}
}

// strtok emulates strtok(3) with delimiters " \t" started at offset s:
// it skips leading delimiters and NUL-terminates the word it returns.
func (p *parser) strtok(s int) (int, bool) {
	i := s
	for p.buf[i] == ' ' || p.buf[i] == '\t' {
		i++
	}
	if p.buf[i] == 0 {
		return 0, false
	}
	w := i
	for p.buf[i] != 0 && p.buf[i] != ' ' && p.buf[i] != '\t' {
		i++
	}
	p.buf[i] = 0
	return w, true
}

// increasePos is uci_increase_pos: step over the command word.
func (p *parser) increasePos(reason string) {
	add := cstrlen(p.buf[p.pos:]) + 1
	if p.pos+add > p.filled {
		p.fail(reason)
	}
	p.pos += add
}

// parseLine is uci_parse_line: the commands of one line, split by ';'.
func (p *parser) parseLine() {
	p.skipWhitespace()
	for {
		w, ok := p.strtok(p.pos)
		if !ok {
			return
		}
		word := p.cstr(w)
		// the line a user would name: the physical line holding the word
		line := p.line
		if !p.lastNL {
			line++
		}
		switch {
		case word[0] == '#':
			return
		case word == "p" || word == "package":
			p.parsePackage()
		case word == "c" || word == "config":
			p.parseConfig(line)
		case word == "o" || word == "option":
			p.parseOption(line, false)
		case word == "l" || word == "list":
			p.parseOption(line, true)
		default:
			p.fail("invalid command")
		}
	}
}

// parsePackage: a 'package' line is checked but, as when libuci loads a
// single config file, does not rename or switch the package.
func (p *parser) parsePackage() {
	p.increasePos("package without name")
	p.nextArg(true, true, true)
	p.assertEOL()
}

func (p *parser) parseConfig(line int) {
	p.increasePos("config without name")
	ofsType := p.nextArg(true, false, false)
	if !validStr(p.cstr(ofsType), false, false) {
		p.fail("invalid character in type field")
	}
	ofsName := p.nextArg(false, true, false)
	p.assertEOL()
	typ, name := p.cstr(ofsType), p.cstr(ofsName)

	if name == "" {
		p.nsect++
		s := &Section{Type: typ, Anonymous: true, Line: line,
			id: fmt.Sprintf("cfg%02x%04x", p.nsect, djbhash(typ)%(1<<16))}
		p.pkg.add(s)
		p.section = s
		return
	}
	// a named section may be reopened; libuci looks it up among all
	// sections, by the generated names of anonymous ones too
	if s := p.pkg.byID[name]; s != nil {
		if s.Type != typ {
			p.fail("section of different type overwrites prior section with same name")
		}
		p.section = s
		return
	}
	p.nsect++
	s := &Section{Type: typ, Name: name, Line: line, id: name}
	p.pkg.add(s)
	p.section = s
}

// parseOption applies 'option' (uci_set) or 'list' (uci_add_list).
func (p *parser) parseOption(line int, list bool) {
	if p.section == nil {
		p.fail("option/list command found before the first section")
	}
	p.increasePos("option without name")
	ofsName := p.nextArg(true, true, false)
	ofsValue := p.nextArg(false, false, false)
	p.assertEOL()
	name, value := p.cstr(ofsName), p.cstr(ofsValue)
	s := p.section
	o := s.Get(name)
	switch {
	case list && o == nil:
		s.addOption(&Option{Name: name, Values: []string{value}, IsList: true, Line: line})
	case list:
		// an option followed by a list of the same name becomes a list
		// holding the option's value first
		o.IsList = true
		o.Values = append(o.Values, value)
		o.Line = line
	case value == "":
		// uci_set with an empty value and an incomplete lookup (as the
		// parser does it) changes nothing: it neither adds nor deletes
	case o == nil:
		s.addOption(&Option{Name: name, Values: []string{value}, Line: line})
	default:
		// a later option replaces the value (and a list) in place
		o.IsList = false
		o.Values = []string{value}
		o.Line = line
	}
}

// djbhash is libuci's hash for generated section names. libuci hashes
// C chars, signed on the platforms the golden data came from; types are
// printable ASCII so the sign never matters.
func djbhash(s string) uint32 {
	h := uint32(5381)
	for i := 0; i < len(s); i++ {
		h = h<<5 + h + uint32(int32(int8(s[i])))
	}
	return h & 0x7FFFFFFF
}

// validStr is uci_validate_str: names are [A-Za-z0-9_] (and '-' for
// package names); types (name false) are any printable ASCII but space.
func validStr(s string, name, pkg bool) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) || c == '_' {
			continue
		}
		if c == '-' && pkg {
			continue
		}
		if name || c < 33 || c > 126 {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
