package main

import (
	"debug/elf"
	"fmt"
	"strings"
)

// target is an OpenWrt package architecture and the Go build for it. The Go settings follow
// lang/golang's golang-values.mk for the CPU named in the architecture: no FPU on the 24Kc
// MIPS cores (softfloat), VFPv4 on the Cortex-A7 (GOARM=7), ARMv8.0 on the Cortex-A53.
type target struct {
	arch    string
	env     []string // besides GOOS=linux and CGO_ENABLED=0
	machine elf.Machine
	class   elf.Class
	data    elf.Data
}

var targets = []target{
	{"mipsel_24kc", []string{"GOARCH=mipsle", "GOMIPS=softfloat"}, elf.EM_MIPS, elf.ELFCLASS32, elf.ELFDATA2LSB},
	{"mips_24kc", []string{"GOARCH=mips", "GOMIPS=softfloat"}, elf.EM_MIPS, elf.ELFCLASS32, elf.ELFDATA2MSB},
	{"arm_cortex-a7_neon-vfpv4", []string{"GOARCH=arm", "GOARM=7"}, elf.EM_ARM, elf.ELFCLASS32, elf.ELFDATA2LSB},
	{"aarch64_cortex-a53", []string{"GOARCH=arm64", "GOARM64=v8.0"}, elf.EM_AARCH64, elf.ELFCLASS64, elf.ELFDATA2LSB},
	{"x86_64", []string{"GOARCH=amd64", "GOAMD64=v1"}, elf.EM_X86_64, elf.ELFCLASS64, elf.ELFDATA2LSB},
}

func lookupTarget(arch string) (target, error) {
	var names []string
	for _, t := range targets {
		if t.arch == arch {
			return t, nil
		}
		names = append(names, t.arch)
	}
	return target{}, fmt.Errorf("architecture %q: not one of %s", arch, strings.Join(names, ", "))
}

func (t target) goEnv() []string {
	return append([]string{"GOOS=linux", "CGO_ENABLED=0"}, t.env...)
}

// checkBinary makes sure bin is a static Linux executable for t, so that a binary built for
// another architecture (or with cgo) is never packed.
func (t target) checkBinary(bin string) error {
	f, err := elf.Open(bin)
	if err != nil {
		return fmt.Errorf("binary %s: %w", bin, err)
	}
	defer f.Close()
	if f.Machine != t.machine || f.Class != t.class || f.Data != t.data {
		return fmt.Errorf("binary %s: %v %v %v, not an executable for %s (%v %v %v)",
			bin, f.Machine, f.Class, f.Data, t.arch, t.machine, t.class, t.data)
	}
	if f.Type != elf.ET_EXEC {
		return fmt.Errorf("binary %s: ELF type %v, want a static executable (ET_EXEC)", bin, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			return fmt.Errorf("binary %s: dynamically linked; build with CGO_ENABLED=0", bin)
		}
	}
	return nil
}
