package auth

import (
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func BenchmarkVerifyStatic(b *testing.B) {
	f := newFixture(b)
	var tok string
	for t := range f.static {
		tok = t
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.a.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyStaticUnknown(b *testing.B) {
	f := newFixture(b)
	tok, _ := GenerateToken()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.a.Verify(tok); err == nil {
			b.Fatal("accepted")
		}
	}
}

func BenchmarkVerifyHS256(b *testing.B) {
	f := newFixture(b)
	tok := sign(b, jwt.SigningMethodHS256, testSecret, "", goodClaims("carol"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.a.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyES256(b *testing.B) {
	f := newFixture(b)
	tok := sign(b, jwt.SigningMethodES256, f.keys.ec, "ec1", goodClaims("erin"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.a.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
