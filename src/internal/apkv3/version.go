package apkv3

// Version tokens in the order apk allows them (apk-tools src/version.c).
const (
	tokInitialDigit = iota
	tokDigit
	tokLetter
	tokSuffix
	tokSuffixNo
	tokCommitHash
	tokRevisionNo
)

var versionSuffixes = map[string]bool{"alpha": true, "beta": true, "pre": true, "rc": true,
	"cvs": true, "svn": true, "git": true, "hg": true, "p": true}

// ValidVersion reports whether v is a version apk accepts (apk_version_validate):
// number{.number}...{letter}{_suffix{number}}...{~hash}{-r#}, e.g. 0.1.0-r1 or 1.2_rc3.
// OpenWrt's VERSION for apk is PKG_VERSION-rPKG_RELEASE, so "0.1.0-1" is refused.
func ValidVersion(v string) bool {
	i, tok := 0, tokInitialDigit
	digits := func() bool {
		start := i
		for i < len(v) && v[i] >= '0' && v[i] <= '9' {
			i++
		}
		return i > start
	}
	if !digits() {
		return false
	}
	for i < len(v) {
		c := v[i]
		switch {
		case c >= 'a' && c <= 'z':
			if tok > tokDigit {
				return false
			}
			i++
			tok = tokLetter
		case c == '.' || c >= '0' && c <= '9':
			if c == '.' {
				if tok > tokDigit {
					return false
				}
				i++
			}
			switch tok {
			case tokInitialDigit, tokDigit:
				tok = tokDigit
			case tokSuffix:
				tok = tokSuffixNo
			default:
				return false
			}
			if !digits() {
				return false
			}
		case c == '_':
			if tok > tokSuffixNo {
				return false
			}
			i++
			start := i
			for i < len(v) && v[i] >= 'a' && v[i] <= 'z' {
				i++
			}
			if !versionSuffixes[v[start:i]] {
				return false
			}
			tok = tokSuffix
		case c == '~':
			if tok >= tokCommitHash {
				return false
			}
			i++
			start := i
			for i < len(v) && (v[i] >= '0' && v[i] <= '9' || v[i] >= 'a' && v[i] <= 'f') {
				i++
			}
			if i == start {
				return false
			}
			tok = tokCommitHash
		case c == '-':
			if tok >= tokRevisionNo || i+1 >= len(v) || v[i+1] != 'r' {
				return false
			}
			i += 2
			tok = tokRevisionNo
			if !digits() {
				return false
			}
		default:
			return false
		}
	}
	return true
}
