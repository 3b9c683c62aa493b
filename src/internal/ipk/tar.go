package ipk

import (
	"bytes"
	"fmt"
	"io/fs"
	"strconv"
)

// tarWriter writes GNU tar archives the way GNU tar does with --format=gnu --numeric-owner
// under fakeroot: headers with owner 0:0, no user, group or device fields, and the archive
// padded to whole records of 20 blocks. archive/tar differs in small ways (it fills in the
// device fields), so the few header fields are written here.
type tarWriter struct {
	buf bytes.Buffer
}

type tarEntry struct {
	name  string
	mode  fs.FileMode
	mtime int64
	data  []byte
}

const (
	blockSize  = 512
	recordSize = 20 * blockSize
)

func (t *tarWriter) add(e tarEntry) error {
	// GNU tar would spill a longer name into a ././@LongLink entry; af-conn has no such path.
	if len(e.name) >= 100 {
		return fmt.Errorf("tar entry %s: name longer than 99 bytes", e.name)
	}
	if e.mtime >= 1<<33 || len(e.data) >= 1<<33 {
		return fmt.Errorf("tar entry %s: size or time too large for the header", e.name)
	}
	var h [blockSize]byte
	copy(h[0:100], e.name)
	octal(h[100:108], int64(e.mode.Perm()))
	octal(h[108:116], 0) // uid
	octal(h[116:124], 0) // gid
	size := int64(len(e.data))
	typeflag := byte('0')
	if e.mode.IsDir() {
		typeflag = '5'
		size = 0
	}
	octal(h[124:136], size)
	octal(h[136:148], e.mtime)
	h[156] = typeflag
	copy(h[257:265], "ustar  \x00") // GNU magic and version
	// The checksum is taken with its own field as spaces, then written as 6 digits, NUL, space.
	copy(h[148:156], "        ")
	var sum int64
	for _, c := range h {
		sum += int64(c)
	}
	octal(h[148:155], sum)
	h[155] = ' '

	t.buf.Write(h[:])
	if !e.mode.IsDir() {
		t.buf.Write(e.data)
		t.pad(blockSize)
	}
	return nil
}

// finish ends the archive with two zero blocks and pads it to a whole record.
func (t *tarWriter) finish() []byte {
	t.buf.Write(make([]byte, 2*blockSize))
	t.pad(recordSize)
	return t.buf.Bytes()
}

func (t *tarWriter) pad(n int) {
	if r := t.buf.Len() % n; r != 0 {
		t.buf.Write(make([]byte, n-r))
	}
}

// octal writes v as zero-padded octal digits followed by a NUL, filling the field.
func octal(field []byte, v int64) {
	s := strconv.FormatInt(v, 8)
	digits := len(field) - 1
	for len(s) < digits {
		s = "0" + s
	}
	copy(field, s)
	field[digits] = 0
}
