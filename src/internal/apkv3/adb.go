package apkv3

import (
	"encoding/binary"
	"fmt"
)

// Value tags of the ADB wire format (apk-tools src/adb.h): the high four bits are the type,
// the low 28 bits the immediate value or the offset of the value in the ADB block.
const (
	typeSpecial = 0x00000000
	typeInt     = 0x10000000
	typeInt32   = 0x20000000
	typeInt64   = 0x30000000
	typeBlob8   = 0x80000000
	typeBlob16  = 0x90000000
	typeBlob32  = 0xa0000000
	typeArray   = 0xd0000000
	typeObject  = 0xe0000000
	typeMask    = 0xf0000000
	valueMask   = 0x0fffffff
	null        = 0
	adbHdrSize  = 8 // struct adb_hdr: compat version, version, reserved, root
)

// adbWriter builds an ADB block the way apk-tools' writer (adb_w_*) lays it out, so that the
// same calls in the same order give the same bytes: each value is appended at its alignment
// (zero padding), and a value whose bytes were written before is not written again but
// shared, unless the earlier copy is not aligned for it (adb_w_data's cache).
type adbWriter struct {
	buf   []byte
	cache map[string]uint32
	err   error
}

func newADBWriter() *adbWriter {
	return &adbWriter{buf: make([]byte, adbHdrSize), cache: map[string]uint32{}}
}

func (a *adbWriter) raw(b []byte, align int) uint32 {
	for len(a.buf)%align != 0 {
		a.buf = append(a.buf, 0)
	}
	off := len(a.buf)
	if off+len(b) > valueMask && a.err == nil {
		a.err = fmt.Errorf("package metadata larger than the %d bytes ADB can address", valueMask)
	}
	a.buf = append(a.buf, b...)
	return uint32(off)
}

func (a *adbWriter) data(b []byte, align int) uint32 {
	if off, ok := a.cache[string(b)]; ok && int(off)%align == 0 {
		return off
	}
	off := a.raw(b, align)
	a.cache[string(b)] = off
	return off
}

// blobBytes is a blob as stored: its length in the smallest of 1, 2 or 4 bytes, then the bytes.
func blobBytes(b []byte) (tag uint32, stored []byte, align int) {
	switch n := len(b); {
	case n > 0xffff:
		stored = binary.LittleEndian.AppendUint32(nil, uint32(n))
		tag, align = typeBlob32, 4
	case n > 0xff:
		stored = binary.LittleEndian.AppendUint16(nil, uint16(n))
		tag, align = typeBlob16, 2
	default:
		stored = []byte{byte(n)}
		tag, align = typeBlob8, 1
	}
	return tag, append(stored, b...), align
}

// blob writes b; an empty blob is no value at all (null), as in adb_w_blob.
func (a *adbWriter) blob(b []byte) uint32 {
	if len(b) == 0 {
		return null
	}
	tag, stored, align := blobBytes(b)
	return tag | a.data(stored, align)
}

// blobRaw writes b without sharing it, so it can be patched later (adb_w_blob_raw).
func (a *adbWriter) blobRaw(b []byte) uint32 {
	if len(b) == 0 {
		return null
	}
	tag, stored, align := blobBytes(b)
	return tag | a.raw(stored, align)
}

func (a *adbWriter) str(s string) uint32 { return a.blob([]byte(s)) }

func (a *adbWriter) int(v uint64) uint32 {
	switch {
	case v >= 1<<32:
		return typeInt64 | a.data(binary.LittleEndian.AppendUint64(nil, v), 4)
	case v >= 1<<28:
		return typeInt32 | a.data(binary.LittleEndian.AppendUint32(nil, uint32(v)), 4)
	}
	return typeInt | uint32(v)
}

// object writes the slots of an object or array (slot 0 is filled in with the count);
// trailing null slots are dropped and an object with nothing set is null (__adb_w_obj).
// apk-tools writes arrays through adb_w_obj too, so they carry the object type.
func (a *adbWriter) object(slots []uint32) uint32 {
	n := len(slots)
	for n > 1 && slots[n-1] == null {
		n--
	}
	if n <= 1 {
		return null
	}
	b := binary.LittleEndian.AppendUint32(nil, uint32(n))
	for _, v := range slots[1:n] {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return typeObject | a.data(b, 4)
}

// finish sets the root value in the header and returns the block.
func (a *adbWriter) finish(root uint32) ([]byte, error) {
	binary.LittleEndian.PutUint32(a.buf[4:8], root)
	return a.buf, a.err
}
