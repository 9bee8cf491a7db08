package main

import (
	"bytes"
	"fmt"
	"html"
	"strings"
)

func renderMD(doc []block) string {
	var b strings.Builder
	for _, bl := range doc {
		if bl.heading != "" {
			fmt.Fprintf(&b, "## %s\n\n", bl.heading)
		}
		if len(bl.text) > 0 {
			for _, l := range bl.text {
				b.WriteString(l)
				b.WriteString("\n")
				if !strings.HasPrefix(l, "- ") {
					b.WriteString("\n")
				}
			}
			if strings.HasPrefix(bl.text[len(bl.text)-1], "- ") {
				b.WriteString("\n")
			}
		}
		if t := bl.table; t != nil {
			esc := func(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
			b.WriteString("|")
			for _, h := range t.head {
				b.WriteString(" " + esc(h) + " |")
			}
			b.WriteString("\n|")
			for range t.head {
				b.WriteString("---|")
			}
			b.WriteString("\n")
			for _, row := range t.rows {
				b.WriteString("|")
				for _, c := range row {
					b.WriteString(" " + esc(c) + " |")
				}
				b.WriteString("\n")
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// mdInline renders the little Markdown the text uses: **bold** and `code`.
func mdInline(s string) string {
	s = html.EscapeString(s)
	for _, m := range []struct{ mark, open, close string }{{"**", "<b>", "</b>"}, {"`", "<code>", "</code>"}} {
		for {
			i := strings.Index(s, m.mark)
			if i < 0 {
				break
			}
			j := strings.Index(s[i+len(m.mark):], m.mark)
			if j < 0 {
				break
			}
			j += i + len(m.mark)
			s = s[:i] + m.open + s[i+len(m.mark):j] + m.close + s[j+len(m.mark):]
		}
	}
	return s
}

const reportCSS = `body{font:14px/1.45 system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}code{background:#f5f5f5;padding:0 3px}details{margin:.4em 0}summary{cursor:pointer}
iframe{width:100%;height:900px;border:1px solid #ccc}h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}`

func renderHTML(doc []block, rs *results) (string, error) {
	var b strings.Builder
	b.WriteString("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>gateway benchmark</title><style>" + reportCSS + "</style></head><body>\n")
	for _, bl := range doc {
		if bl.heading != "" {
			fmt.Fprintf(&b, "<h2>%s</h2>\n", html.EscapeString(bl.heading))
		}
		inList := false
		for _, l := range bl.text {
			switch {
			case strings.HasPrefix(l, "# "):
				fmt.Fprintf(&b, "<h1>%s</h1>\n", mdInline(l[2:]))
			case strings.HasPrefix(l, "- "):
				if !inList {
					b.WriteString("<ul>\n")
					inList = true
				}
				fmt.Fprintf(&b, "<li>%s</li>\n", mdInline(l[2:]))
			default:
				fmt.Fprintf(&b, "<p>%s</p>\n", mdInline(l))
			}
		}
		if inList {
			b.WriteString("</ul>\n")
		}
		if t := bl.table; t != nil {
			b.WriteString("<table><tr>")
			for _, h := range t.head {
				fmt.Fprintf(&b, "<th>%s</th>", mdInline(h))
			}
			b.WriteString("</tr>\n")
			for _, row := range t.rows {
				b.WriteString("<tr>")
				for _, c := range row {
					fmt.Fprintf(&b, "<td>%s</td>", mdInline(c))
				}
				b.WriteString("</tr>\n")
			}
			b.WriteString("</table>\n")
		}
	}
	b.WriteString("<h2>Each run's report (latency plots)</h2>\n<p>Each is the self-contained report of <code>gateway bench --out-html</code>, embedded whole; open one to see its plots.</p>\n")
	for _, r := range rs.sortedRuns() {
		if r.rep == nil {
			continue
		}
		var one bytes.Buffer
		if err := r.rep.WriteHTML(&one); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "<details><summary>%s / %s</summary><iframe loading=\"lazy\" srcdoc=\"%s\"></iframe></details>\n",
			html.EscapeString(r.server), html.EscapeString(r.scenario), html.EscapeString(one.String()))
	}
	b.WriteString("</body></html>\n")
	return b.String(), nil
}
