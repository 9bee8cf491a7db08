package auth

import (
	"slices"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzVerify: no token string may panic Verify, every failure carries one of
// the documented labels, and a success names a valid subject.
func FuzzVerify(f *testing.F) {
	fx := newFixture(f)
	c := goodClaims("fuzz")
	for _, s := range []string{
		"", ".", "..", "a.b.c", "a.b.c.d",
		sign(f, jwt.SigningMethodHS256, testSecret, "", c),
		sign(f, jwt.SigningMethodRS256, fx.keys.rsa, "rsa1", c),
		sign(f, jwt.SigningMethodES256, fx.keys.ec, "ec1", c),
		sign(f, jwt.SigningMethodEdDSA, fx.keys.ed, "ed1", c),
	} {
		f.Add(s)
	}
	for tok := range fx.static {
		f.Add(tok)
	}
	f.Fuzz(func(t *testing.T, token string) {
		p, err := fx.a.Verify(token)
		if err != nil {
			if !slices.Contains(Reasons, Reason(err)) {
				t.Fatalf("Reason %q not in Reasons (err %v)", Reason(err), err)
			}
			if p != (Principal{}) {
				t.Fatalf("failed verification returned %+v", p)
			}
			return
		}
		if !validSubject(p.Subject) {
			t.Fatalf("accepted token with subject %q", p.Subject)
		}
	})
}
