package bench

import (
	"encoding/json"
	"testing"
)

func partialWith(vals []int64, errs map[string]int64, perSec []int64) *Partial {
	h := newHist()
	for _, v := range vals {
		h.RecordValue(v)
	}
	return &Partial{
		Attempted: int64(len(vals)), Established: int64(len(vals)), Completed: int64(len(vals)),
		Errors: errs, Hists: map[string]Hist{hCall: {h}}, PerSecond: perSec,
	}
}

func TestMergeEqualsOneHistogram(t *testing.T) {
	var a, b, all []int64
	for i := int64(1); i <= 5000; i++ {
		a = append(a, i*3)
		b = append(b, 100_000+i*17)
	}
	all = append(append(all, a...), b...)
	pa := partialWith(a, map[string]int64{"call/timeout": 2}, []int64{1, 2})
	pb := partialWith(b, map[string]int64{"call/timeout": 1, "hold/close 1008": 4}, []int64{10, 20, 30})

	// Ship b the way a worker does: JSON over a pipe.
	js, err := json.Marshal(pb)
	if err != nil {
		t.Fatal(err)
	}
	var shipped Partial
	if err := json.Unmarshal(js, &shipped); err != nil {
		t.Fatal(err)
	}
	if !shipped.Hists[hCall].Equals(pb.Hists[hCall].Histogram) {
		t.Fatal("histogram changed in the JSON round trip")
	}

	var m Partial
	m.merge(pa)
	m.merge(&shipped)
	want := partialWith(all, nil, nil).Hists[hCall]
	got := m.Hists[hCall]
	if got.TotalCount() != 10000 {
		t.Fatalf("count %d", got.TotalCount())
	}
	for _, q := range []float64{50, 90, 99, 99.9, 100} {
		if g, w := got.ValueAtQuantile(q), want.ValueAtQuantile(q); g != w {
			t.Errorf("p%v: merged %d, single %d", q, g, w)
		}
	}
	if m.Errors["call/timeout"] != 3 || m.Errors["hold/close 1008"] != 4 || m.errorTotal() != 7 {
		t.Errorf("errors %v", m.Errors)
	}
	if len(m.PerSecond) != 3 || m.PerSecond[0] != 11 || m.PerSecond[1] != 22 || m.PerSecond[2] != 30 {
		t.Errorf("per second %v", m.PerSecond)
	}
	if m.Completed != 10000 {
		t.Errorf("completed %d", m.Completed)
	}
}

func TestRecorderClampsAndMerges(t *testing.T) {
	r := newRecorder(4)
	for i := range 100 {
		r.record(i, int64(i)) // 0 is clamped up to 1 µs
	}
	r.record(0, histMax*10) // an outlier is kept, at the top of the range
	h := r.merged()
	if h.TotalCount() != 101 {
		t.Fatalf("count %d", h.TotalCount())
	}
	if h.Min() != 1 || !h.ValuesAreEquivalent(h.Max(), histMax) {
		t.Errorf("min %d max %d", h.Min(), h.Max())
	}
}

func TestSortedKinds(t *testing.T) {
	got := sortedKinds(map[string]int64{"b": 1, "a": 1, "c": 5})
	if len(got) != 3 || got[0] != "c" || got[1] != "a" || got[2] != "b" {
		t.Errorf("%v", got)
	}
}
