package dnsx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Record types and the class this package understands.
const (
	TypeA     uint16 = 1
	TypeCNAME uint16 = 5
	TypeAAAA  uint16 = 28
	TypeANY   uint16 = 255
	ClassINET uint16 = 1
)

// Limits of the parser. They keep the work per message linear in its size.
const (
	headerLen = 12
	// MaxNameWire is the longest name on the wire (RFC 1035 3.1), length
	// octets and the root label included.
	MaxNameWire = 255
	// maxPointers bounds the compression pointers followed for one name. A
	// legal name has at most 127 labels, so it never needs more jumps.
	maxPointers = 127
	// MaxAnswers bounds the answer records kept from one message; more is
	// not an answer a resolver gives to an A or AAAA question.
	MaxAnswers = 256
)

// Errors returned by Parse. They are wrapped with the offset where the
// problem was found; use errors.Is to classify.
var (
	ErrShort       = errors.New("message truncated")
	ErrPointer     = errors.New("bad compression pointer")
	ErrNameTooLong = errors.New("name longer than 255 octets")
	ErrLabelType   = errors.New("reserved label type")
	ErrQDCount     = errors.New("question count is not 1")
	ErrTooMany     = errors.New("too many answer records")
	ErrRDataLength = errors.New("bad record data length")
)

// Header is the fixed DNS header (RFC 1035 4.1.1).
type Header struct {
	ID        uint16
	Response  bool // QR
	Opcode    uint8
	Truncated bool // TC
	RCode     uint8
	QDCount   uint16
	ANCount   uint16
	NSCount   uint16
	ARCount   uint16
}

// Question is the one question of a query or reply. Name is normalized.
type Question struct {
	Name  string
	Type  uint16
	Class uint16
}

// Record is one answer record of class IN and type A, AAAA or CNAME; other
// records are skipped by the parser. Name and Target are normalized.
type Record struct {
	Name   string
	Type   uint16
	Class  uint16
	TTL    uint32
	Addr   netip.Addr // A, AAAA
	Target string     // CNAME
}

// Message is what the extractor needs of a DNS message: the header, the
// question and the A, AAAA and CNAME answers. Authority and additional
// sections are not read: nothing in them is trusted.
type Message struct {
	Header
	Question Question
	Answers  []Record
	// Skipped counts answer records of other types or classes.
	Skipped int
}

// ParseHeader reads only the fixed header.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < headerLen {
		return Header{}, fmt.Errorf("header: %d bytes, need %d: %w", len(b), headerLen, ErrShort)
	}
	flags := binary.BigEndian.Uint16(b[2:])
	return Header{
		ID:        binary.BigEndian.Uint16(b[0:]),
		Response:  flags&0x8000 != 0,
		Opcode:    uint8(flags>>11) & 0xf,
		Truncated: flags&0x0200 != 0,
		RCode:     uint8(flags & 0xf),
		QDCount:   binary.BigEndian.Uint16(b[4:]),
		ANCount:   binary.BigEndian.Uint16(b[6:]),
		NSCount:   binary.BigEndian.Uint16(b[8:]),
		ARCount:   binary.BigEndian.Uint16(b[10:]),
	}, nil
}

// Parse parses a DNS message: header, exactly one question and the answer
// section. Every length is checked against the message; compression
// pointers must point backwards into the message body. A message that fails
// any check yields an error naming what was wrong and at which offset, and
// no partial result.
func Parse(b []byte) (*Message, error) {
	m := &Message{}
	if err := m.parse(b); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Message) parse(b []byte) error {
	if len(b) > 65535 {
		return fmt.Errorf("message of %d bytes: %w", len(b), ErrTooMany)
	}
	h, err := ParseHeader(b)
	if err != nil {
		return err
	}
	m.Header = h
	if h.QDCount != 1 {
		return fmt.Errorf("header: qdcount %d: %w", h.QDCount, ErrQDCount)
	}
	p := parser{msg: b}
	var off int
	m.Question, off, err = p.question()
	if err != nil {
		return err
	}
	// Each record takes at least 11 octets, so a count the message cannot
	// hold is caught by the length checks below; MaxAnswers bounds memory.
	if int(h.ANCount) > MaxAnswers {
		return fmt.Errorf("header: ancount %d over %d: %w", h.ANCount, MaxAnswers, ErrTooMany)
	}
	if h.ANCount > 0 {
		m.Answers = make([]Record, 0, h.ANCount)
	}
	for i := 0; i < int(h.ANCount); i++ {
		var r Record
		var keep bool
		start := off
		r, keep, off, err = p.record(off)
		if err != nil {
			return fmt.Errorf("answer %d at offset %d: %w", i, start, err)
		}
		if keep {
			m.Answers = append(m.Answers, r)
		} else {
			m.Skipped++
		}
	}
	return nil
}

type parser struct {
	msg []byte
	// Names decoded so far, by offset: answers mostly point at names seen
	// before (the question, the previous CNAME target), so a pointer to one
	// of them reuses its string instead of decoding it again.
	cache [8]cachedName
	n     int
}

type cachedName struct {
	off   int
	name  string
	wire  int // wire length without the root octet
	jumps int
}

func (p *parser) lookup(off int) *cachedName {
	for i := 0; i < p.n && i < len(p.cache); i++ {
		if p.cache[i].off == off {
			return &p.cache[i]
		}
	}
	return nil
}

func (p *parser) remember(c cachedName) {
	p.cache[p.n%len(p.cache)] = c
	p.n++
}

// question reads the question after the header.
func (p *parser) question() (Question, int, error) {
	b := p.msg
	name, off, err := p.name(headerLen)
	if err != nil {
		return Question{}, 0, fmt.Errorf("question name: %w", err)
	}
	if off+4 > len(b) {
		return Question{}, 0, fmt.Errorf("question at offset %d: %w", off, ErrShort)
	}
	q := Question{
		Name:  name,
		Type:  binary.BigEndian.Uint16(b[off:]),
		Class: binary.BigEndian.Uint16(b[off+2:]),
	}
	return q, off + 4, nil
}

func (p *parser) record(off int) (Record, bool, int, error) {
	b := p.msg
	name, off, err := p.name(off)
	if err != nil {
		return Record{}, false, 0, fmt.Errorf("owner name: %w", err)
	}
	if off+10 > len(b) {
		return Record{}, false, 0, fmt.Errorf("record header at offset %d: %w", off, ErrShort)
	}
	r := Record{
		Name:  name,
		Type:  binary.BigEndian.Uint16(b[off:]),
		Class: binary.BigEndian.Uint16(b[off+2:]),
		TTL:   binary.BigEndian.Uint32(b[off+4:]),
	}
	rdlen := int(binary.BigEndian.Uint16(b[off+8:]))
	off += 10
	end := off + rdlen
	if end > len(b) {
		return Record{}, false, 0, fmt.Errorf("rdata of %d octets at offset %d: %w", rdlen, off, ErrShort)
	}
	if r.Class != ClassINET {
		return r, false, end, nil
	}
	switch r.Type {
	case TypeA:
		if rdlen != 4 {
			return Record{}, false, 0, fmt.Errorf("A rdata of %d octets at offset %d: %w", rdlen, off, ErrRDataLength)
		}
		r.Addr = netip.AddrFrom4([4]byte(b[off:end]))
	case TypeAAAA:
		if rdlen != 16 {
			return Record{}, false, 0, fmt.Errorf("AAAA rdata of %d octets at offset %d: %w", rdlen, off, ErrRDataLength)
		}
		r.Addr = netip.AddrFrom16([16]byte(b[off:end]))
	case TypeCNAME:
		target, tend, err := p.name(off)
		if err != nil {
			return Record{}, false, 0, fmt.Errorf("CNAME target: %w", err)
		}
		if tend != end {
			return Record{}, false, 0, fmt.Errorf("CNAME rdata of %d octets holds a name of %d at offset %d: %w", rdlen, tend-off, off, ErrRDataLength)
		}
		r.Target = target
	default:
		return r, false, end, nil
	}
	return r, true, end, nil
}

// name decodes the domain name at off and returns it normalized (see
// NormalizeName) with the offset just past it in its original position.
// A pointer must point into the message body and strictly before the start
// of the part of the name being read (the name's own start, or the previous
// pointer's target): a compressor only refers to names it wrote earlier, and
// the strictly falling targets forbid every loop. At most maxPointers are
// followed.
func (p *parser) name(off int) (string, int, error) {
	b := p.msg
	var sb strings.Builder
	start := off
	seg := off // start of the part being read; pointers must go below it
	end := -1  // offset after the name in its original position
	wire := 0
	jumps := 0
	for {
		if off >= len(b) {
			return "", 0, fmt.Errorf("label at offset %d: %w", off, ErrShort)
		}
		c := int(b[off])
		switch c & 0xC0 {
		case 0x00:
			if c == 0 {
				if end < 0 {
					end = off + 1
				}
				name := sb.String()
				if name == "" {
					name = "."
				}
				p.remember(cachedName{off: start, name: name, wire: wire, jumps: jumps})
				return name, end, nil
			}
			wire += c + 1
			if wire+1 > MaxNameWire {
				return "", 0, fmt.Errorf("name at offset %d: %w", start, ErrNameTooLong)
			}
			if off+1+c > len(b) {
				return "", 0, fmt.Errorf("label of %d octets at offset %d: %w", c, off, ErrShort)
			}
			if sb.Len() > 0 {
				sb.WriteByte('.')
			}
			appendLabel(&sb, b[off+1:off+1+c])
			off += 1 + c
		case 0xC0:
			if off+1 >= len(b) {
				return "", 0, fmt.Errorf("pointer at offset %d: %w", off, ErrShort)
			}
			ptr := int(binary.BigEndian.Uint16(b[off:]) & 0x3FFF)
			if ptr >= seg || ptr < headerLen {
				return "", 0, fmt.Errorf("pointer at offset %d to %d: %w", off, ptr, ErrPointer)
			}
			jumps++
			if jumps > maxPointers {
				return "", 0, fmt.Errorf("name at offset %d: more than %d pointers: %w", start, maxPointers, ErrPointer)
			}
			if end < 0 {
				end = off + 2
			}
			if c := p.lookup(ptr); c != nil {
				// The rest of the name was decoded before: the same checks
				// passed then, only the sums need checking again.
				if wire+c.wire+1 > MaxNameWire {
					return "", 0, fmt.Errorf("name at offset %d: %w", start, ErrNameTooLong)
				}
				if jumps+c.jumps > maxPointers {
					return "", 0, fmt.Errorf("name at offset %d: more than %d pointers: %w", start, maxPointers, ErrPointer)
				}
				name := c.name
				if sb.Len() > 0 {
					if name != "." {
						sb.WriteByte('.')
						sb.WriteString(name)
					}
					name = sb.String()
				}
				p.remember(cachedName{off: start, name: name, wire: wire + c.wire, jumps: jumps + c.jumps})
				return name, end, nil
			}
			off, seg = ptr, ptr
		default:
			return "", 0, fmt.Errorf("label type 0x%02x at offset %d: %w", c&0xC0, off, ErrLabelType)
		}
	}
}

// appendLabel writes a label lower-cased; octets that are not printable
// ASCII, and '.' and '\\' themselves, are escaped as \DDD so that one label
// can never read as two and no whitelist entry matches by accident.
func appendLabel(sb *strings.Builder, l []byte) {
	for _, c := range l {
		switch {
		case c >= 'A' && c <= 'Z':
			sb.WriteByte(c + 'a' - 'A')
		case c == '.' || c == '\\' || c <= ' ' || c >= 0x7f:
			sb.WriteByte('\\')
			sb.WriteByte('0' + c/100)
			sb.WriteByte('0' + c/10%10)
			sb.WriteByte('0' + c%10)
		default:
			sb.WriteByte(c)
		}
	}
}

// NormalizeName gives a presentation-format name the form the parser
// produces: ASCII lower case, no trailing dot, "." for the root.
func NormalizeName(s string) string {
	s = strings.TrimSuffix(strings.ToLower(s), ".")
	if s == "" {
		return "."
	}
	return s
}
