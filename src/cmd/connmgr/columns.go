package main

import (
	"io"
	"strings"
	"unicode/utf8"
)

// tabTable lays out tab-separated text as text/tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) does
// (left-aligned cells, each column as wide as its widest cell plus two spaces, columns
// aligned over consecutive lines that have them), without text/tabwriter: 7 kB of the binary
// for the one table `connmgr status` prints.
type tabTable struct {
	w    io.Writer
	text strings.Builder
}

func newTabTable(w io.Writer) *tabTable { return &tabTable{w: w} }

func (t *tabTable) Write(p []byte) (int, error) { return t.text.Write(p) }

// Flush writes out the text written so far, laid out.
func (t *tabTable) Flush() error {
	text := t.text.String()
	t.text.Reset()
	var lines [][]string
	for text != "" {
		line, rest, found := strings.Cut(text, "\n")
		if !found {
			break // an unterminated last line: tabwriter too keeps it until the newline
		}
		lines = append(lines, strings.Split(line, "\t"))
		text = rest
	}
	var out strings.Builder
	layoutColumns(&out, lines, nil)
	_, err := io.WriteString(t.w, out.String())
	return err
}

// layoutColumns is tabwriter's format: a column block is the run of lines that have a cell
// in the column (a cell is text ended by a tab; the last text of a line is not one).
func layoutColumns(out *strings.Builder, lines [][]string, widths []int) {
	column := len(widths)
	start := 0
	for this := 0; this < len(lines); this++ {
		if column >= len(lines[this])-1 {
			continue
		}
		writeLines(out, lines[start:this], widths)
		start = this
		width := 0
		for ; this < len(lines) && column < len(lines[this])-1; this++ {
			if w := utf8.RuneCountInString(lines[this][column]) + 2; w > width {
				width = w
			}
		}
		layoutColumns(out, lines[start:this], append(widths, width))
		start = this
		this-- // the loop's increment: look at the line that ended the block
	}
	writeLines(out, lines[start:], widths)
}

func writeLines(out *strings.Builder, lines [][]string, widths []int) {
	for _, cells := range lines {
		for j, c := range cells {
			out.WriteString(c)
			if j < len(cells)-1 && j < len(widths) {
				out.WriteString(strings.Repeat(" ", widths[j]-utf8.RuneCountInString(c)))
			}
		}
		out.WriteByte('\n')
	}
}
