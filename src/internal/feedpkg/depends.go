package feedpkg

import "strings"

// defaultDepends is include/package-defaults.mk's PKG_DEFAULT_DEPENDS, which the build puts
// in front of every package's own (kernel modules aside).
const defaultDepends = "+libc"

// ResolveDepends turns DEPENDS into the control file's Depends list as package-pack.mk's
// filter_deps does: "@..." conditions and "+" signs go, and a conditional dependency
// "+SYM:pkg" (or "+!SYM:pkg", SYM being a || and && expression) counts when CONFIG_SYM is
// set (unset) in config.
func ResolveDepends(depends string, config map[string]string) []string {
	words := strings.Fields(defaultDepends)
	defaults := map[string]bool{}
	for _, w := range words {
		defaults[w] = true
	}
	for _, w := range strings.Fields(depends) {
		if !defaults[w] {
			words = append(words, w)
		}
	}
	var out []string
	for _, w := range words {
		if strings.HasPrefix(w, "@") {
			continue
		}
		w = strings.ReplaceAll(w, "+", "")
		cond, pkg, conditional := strings.Cut(w, ":")
		if !conditional {
			if w != "" {
				out = append(out, w)
			}
			continue
		}
		pkg, _, _ = strings.Cut(pkg, ":")
		negated := strings.Contains(cond, "!")
		cond = strings.NewReplacer("!", "", "(", "", ")", "").Replace(cond)
		if holds(cond, config) != negated && pkg != "" {
			out = append(out, pkg)
		}
	}
	return out
}

// holds evaluates A&&B||C over the CONFIG_ symbols that are set.
func holds(cond string, config map[string]string) bool {
	for _, alt := range strings.Split(cond, "||") {
		all := true
		for _, sym := range strings.Split(alt, "&&") {
			if config["CONFIG_"+sym] == "" {
				all = false
			}
		}
		if all {
			return true
		}
	}
	return false
}
