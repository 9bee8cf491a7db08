package bench

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
)

// The HTML report is one file with inline CSS and inline SVG drawn here: it
// must open offline, from an archive or a CI artifact, years later, so it
// references no CDN, font, script or image outside itself.

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"}

// series is one line of a plot, in plot coordinates (already transformed).
type series struct {
	name  string
	color string
	pts   [][2]float64
}

type tick struct {
	at    float64
	label string
}

// plot describes one SVG chart.
type plot struct {
	title, xLabel, yLabel string
	xMin, xMax            float64
	yMin, yMax            float64
	xTicks, yTicks        []tick
	lines                 []series
	bars                  bool // draw the first series as bars
}

const (
	svgW, svgH                     = 760, 340
	padL, padR, padT, padB float64 = 70, 150, 30, 50
)

// svg renders the plot. Only numbers and escaped text go into the markup.
// Inline SVG in HTML5 needs no xmlns, so the file names no URL at all.
func (p *plot) svg() string {
	var b strings.Builder
	pw, ph := svgW-padL-padR, svgH-padT-padB
	sx := func(x float64) float64 { return padL + (x-p.xMin)/(p.xMax-p.xMin)*pw }
	sy := func(y float64) float64 { return padT + ph - (y-p.yMin)/(p.yMax-p.yMin)*ph }
	esc := template.HTMLEscapeString
	fmt.Fprintf(&b, `<svg viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">`,
		svgW, svgH, svgW, svgH, esc(p.title))
	fmt.Fprintf(&b, `<text x="%g" y="18" class="t">%s</text>`, padL, esc(p.title))
	fmt.Fprintf(&b, `<rect x="%g" y="%g" width="%g" height="%g" class="frame"/>`, padL, padT, pw, ph)
	for _, t := range p.yTicks {
		y := sy(t.at)
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" class="grid"/>`, padL, y, padL+pw, y)
		fmt.Fprintf(&b, `<text x="%g" y="%.1f" class="yl">%s</text>`, padL-6, y+4, esc(t.label))
	}
	for _, t := range p.xTicks {
		x := sx(t.at)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" class="grid"/>`, x, padT, x, padT+ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" class="xl">%s</text>`, x, padT+ph+16, esc(t.label))
	}
	fmt.Fprintf(&b, `<text x="%g" y="%g" class="xl">%s</text>`, padL+pw/2, float64(svgH)-8, esc(p.xLabel))
	fmt.Fprintf(&b, `<text transform="translate(16 %g) rotate(-90)" class="xl">%s</text>`, padT+ph/2, esc(p.yLabel))
	for i, s := range p.lines {
		if p.bars && i == 0 {
			bw := pw / math.Max(p.xMax-p.xMin, 1) * 0.8
			for _, pt := range s.pts {
				y := sy(pt[1])
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`,
					sx(pt[0])-bw/2, y, bw, padT+ph-y, s.color)
			}
		} else {
			var pts []string
			for _, pt := range s.pts {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", sx(pt[0]), sy(pt[1])))
			}
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`, strings.Join(pts, " "), s.color)
		}
		ly := padT + 14 + float64(i)*18
		fmt.Fprintf(&b, `<rect x="%g" y="%g" width="12" height="12" fill="%s"/>`, padL+pw+12, ly-10, s.color)
		fmt.Fprintf(&b, `<text x="%g" y="%g" class="lg">%s</text>`, padL+pw+30, ly, esc(s.name))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// latencyPlot draws each histogram's latency by percentile: x is
// log10(1/(1-q)) so that 90, 99, 99.9 % are equally spaced, y is log10(ms).
func latencyPlot(h map[string]Hist) *plot {
	p := &plot{title: "Latency by percentile", xLabel: "percentile", yLabel: "latency (ms, log scale)"}
	xMax, yLo, yHi := 2.0, math.Inf(1), math.Inf(-1)
	for i, name := range histNames {
		x, ok := h[name]
		if !ok || x.Histogram == nil || x.TotalCount() == 0 {
			continue
		}
		cap := math.Log10(float64(max(x.TotalCount(), 10)))
		xMax = math.Max(xMax, math.Ceil(cap))
		s := series{name: name, color: palette[i%len(palette)]}
		for _, br := range x.CumulativeDistributionWithTicks(5) {
			q := br.Quantile / 100
			px := cap
			if q < 1 {
				px = math.Min(-math.Log10(1-q), cap)
			}
			v := math.Max(ms(br.ValueAt), 0.001)
			py := math.Log10(v)
			yLo, yHi = math.Min(yLo, py), math.Max(yHi, py)
			s.pts = append(s.pts, [2]float64{px, py})
		}
		p.lines = append(p.lines, s)
	}
	if len(p.lines) == 0 {
		return nil
	}
	p.xMin, p.xMax = 0, xMax
	for d := 0.0; d <= xMax; d++ {
		p.xTicks = append(p.xTicks, tick{d, pctLabel(d)})
	}
	p.yMin, p.yMax = math.Floor(yLo), math.Ceil(yHi)
	if p.yMax <= p.yMin {
		p.yMax = p.yMin + 1
	}
	for d := p.yMin; d <= p.yMax; d++ {
		p.yTicks = append(p.yTicks, tick{d, trimFloat(math.Pow(10, d))})
		if p.yMax-p.yMin <= 2 && d < p.yMax {
			for _, m := range []float64{2, 5} {
				p.yTicks = append(p.yTicks, tick{d + math.Log10(m), trimFloat(m * math.Pow(10, d))})
			}
		}
	}
	return p
}

// pctLabel names x = log10(1/(1-q)): 0 -> 0%, 1 -> 90%, 2 -> 99%, 3 -> 99.9%.
func pctLabel(d float64) string {
	switch n := int(d); {
	case n <= 0:
		return "0%"
	case n == 1:
		return "90%"
	case n == 2:
		return "99%"
	default:
		return "99." + strings.Repeat("9", n-2) + "%"
	}
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.4f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

// throughputPlot draws calls completed in each second of the call phase.
func throughputPlot(per []int64) *plot {
	if len(per) == 0 {
		return nil
	}
	p := &plot{title: "Calls completed per second", xLabel: "second of the call phase", yLabel: "calls/s", bars: true}
	s := series{name: "calls/s", color: palette[0]}
	var top int64 = 1
	for i, v := range per {
		s.pts = append(s.pts, [2]float64{float64(i) + 0.5, float64(v)})
		top = max(top, v)
	}
	p.lines = []series{s}
	p.xMin, p.xMax = 0, float64(len(per))
	step := max(1, len(per)/10)
	for i := 0; i <= len(per); i += step {
		p.xTicks = append(p.xTicks, tick{float64(i), fmt.Sprint(i)})
	}
	mag := math.Pow(10, math.Floor(math.Log10(float64(top))))
	p.yMin, p.yMax = 0, math.Ceil(float64(top)*1.05/mag)*mag
	for v := 0.0; v <= p.yMax; v += mag {
		p.yTicks = append(p.yTicks, tick{v, trimFloat(v)})
	}
	return p
}

const htmlCSS = `body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:980px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
.sub{color:#666}table{border-collapse:collapse;margin:.5em 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:1em 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:120px}.card b{display:block;font-size:1.35em}
.card span{color:#666;font-size:.85em}.ok{color:#2a7d2a}.bad{color:#b22}
svg{max-width:100%;height:auto;margin:.5em 0}svg .frame{fill:none;stroke:#999}svg .grid{stroke:#e5e5e5}
svg text{font:12px system-ui,sans-serif;fill:#333}svg .t{font-weight:600;font-size:13px}
svg .yl{text-anchor:end}svg .xl{text-anchor:middle}svg .lg{font-size:12px}`

var htmlTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"f3":    func(v float64) string { return fmt.Sprintf("%.3f", v) },
	"f1":    func(v float64) string { return fmt.Sprintf("%.1f", v) },
	"f2":    func(v float64) string { return fmt.Sprintf("%.2f", v) },
	"bytes": fmtBytes,
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>gateway bench: {{.R.Mode}} {{.R.Settings.Conns}} conns</title>
<style>{{.CSS}}</style></head><body>
<h1>gateway bench: {{.R.Mode}}, {{.R.Settings.Conns}} connections</h1>
<div class="sub">{{.R.URL}} · {{.R.Started.Format "2006-01-02 15:04:05 MST"}}{{if ne .R.Mode "connect"}} · duration {{.R.Settings.Duration}}{{end}}{{if eq .R.Mode "call"}} · {{.Rate}} · message {{.R.Settings.MessageSize}} B{{end}}</div>
<div class="cards">
<div class="card"><b>{{.R.Connections.Established}}/{{.R.Settings.Conns}}</b><span>connections established</span></div>
{{with .R.Calls}}<div class="card"><b>{{printf "%.0f" .Throughput}}</b><span>calls/s</span></div>{{end}}
{{with .CallP99}}<div class="card"><b>{{f3 .}} ms</b><span>call p99</span></div>{{end}}
<div class="card"><b class="{{if .R.ErrorTotal}}bad{{else}}ok{{end}}">{{.R.ErrorTotal}}</b><span>errors</span></div>
{{with .R.Server}}<div class="card"><b>{{f2 .KiBPerConnEnd}} KiB</b><span>server RSS per connection</span></div>
{{if .USPerCall}}<div class="card"><b>{{f2 .USPerCall}} µs</b><span>server CPU per call</span></div>{{end}}{{end}}
</div>
<h2>Latency (ms)</h2>
<table><tr><th>phase</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>mean</th></tr>
{{range .R.Latency}}<tr><td>{{.Name}}</td><td>{{.Count}}</td><td>{{f3 .P50}}</td><td>{{f3 .P90}}</td><td>{{f3 .P99}}</td><td>{{f3 .P999}}</td><td>{{f3 .Max}}</td><td>{{f3 .Mean}}</td></tr>
{{end}}</table>
{{.LatencySVG}}
{{.ThroughputSVG}}
<h2>Connections and calls</h2>
<table>
<tr><td>attempted / established / failed / lost</td><td>{{.R.Connections.Attempted}} / {{.R.Connections.Established}} / {{.R.Connections.Failed}} / {{.R.Connections.Lost}}</td></tr>
<tr><td>connect phase</td><td>{{f2 .R.Connections.ConnectSecs}} s ({{printf "%.0f" .R.Connections.PerSec}}/s)</td></tr>
{{with .R.Calls}}<tr><td>calls sent / completed</td><td>{{.Sent}} / {{.Completed}}</td></tr>
<tr><td>throughput</td><td>{{printf "%.0f" .Throughput}} calls/s over {{f2 .Secs}} s{{if .TargetRate}} (target {{.TargetRate}}/s){{end}}</td></tr>{{end}}
</table>
<h2>Errors</h2>
{{if .R.Errors}}<table><tr><th>kind</th><th>count</th></tr>{{range .R.Errors}}<tr><td>{{.Kind}}</td><td>{{.Count}}</td></tr>{{end}}</table>{{else}}<p class="ok">none</p>{{end}}
{{with .R.Server}}<h2>Server ({{.Source}})</h2>
<table>
<tr><td>processes counted</td><td>{{.Procs}}</td></tr>
<tr><td>RSS before / connected / end</td><td>{{bytes .RSSBefore}} / {{bytes .RSSConnected}} / {{bytes .RSSEnd}}</td></tr>
<tr><td>RSS per connection, connected / end</td><td>{{f2 .KiBPerConnOpen}} KiB / {{f2 .KiBPerConnEnd}} KiB</td></tr>
<tr><td>CPU connecting</td><td>{{f2 .CPUConnectSecs}} s ({{f1 .USPerConn}} µs/conn)</td></tr>
<tr><td>CPU running</td><td>{{f2 .CPURunSecs}} s ({{f2 .CoresDuringRun}} cores){{if .USPerCall}}, {{f2 .USPerCall}} µs/call{{end}}</td></tr>
</table>{{end}}
<h2>Settings and machine</h2>
<table>
<tr><td>settings</td><td>auth {{.R.Settings.Auth}}, initialize {{.R.Settings.Init}}, subprotocol "{{.R.Settings.Subprotocol}}", ramp {{.R.Settings.Ramp}}/s, timeout {{.R.Settings.Timeout}}, {{.R.Settings.Workers}} process(es), {{.R.Settings.SourceIPs}} source address(es)</td></tr>
<tr><td>machine</td><td>{{.R.Machine.CPU}}, {{.R.Machine.CPUs}} CPUs, {{.R.Machine.MemTotal}}, {{.R.Machine.OS}} {{.R.Machine.Kernel}}, {{.R.Machine.GoVersion}}</td></tr>
{{with .R.Host}}{{range .CPUs}}<tr><td>cpu{{.CPU}} over the run</td><td>busy {{f1 .BusyPct}} % (softirq {{f1 .SoftIRQPct}} %), steal {{f1 .StealPct}} % (worst 100 ms window: {{f1 .StealMaxPct}} %)</td></tr>{{end}}{{end}}
</table>
<script type="application/json" id="report">{{.JSON}}</script>
</body></html>
`))

// WriteHTML renders the self-contained HTML report.
func (r *Report) WriteHTML(w io.Writer) error {
	js, err := json.Marshal(r)
	if err != nil {
		return err
	}
	data := struct {
		R                         *Report
		CSS                       template.CSS
		Rate                      string
		CallP99                   float64
		LatencySVG, ThroughputSVG template.HTML
		JSON                      template.JS
	}{R: r, CSS: template.CSS(htmlCSS), Rate: strings.TrimSpace(r.rateText()), JSON: template.JS(js)}
	for _, l := range r.Latency {
		if l.Name == hCall {
			data.CallP99 = l.P99
		}
	}
	if p := latencyPlot(r.Hists); p != nil {
		data.LatencySVG = template.HTML(p.svg())
	}
	if p := throughputPlot(r.PerSecond); p != nil {
		data.ThroughputSVG = template.HTML(p.svg())
	}
	return htmlTmpl.Execute(w, data)
}
