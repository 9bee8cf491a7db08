package tlsconn

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ServerTLSConfig returns the gateway's TLS settings: TLS 1.2 or 1.3 as the
// minimum (minVersion "1.2", the default when empty, or "1.3"), 1.3 as the
// maximum (Go negotiates the highest version both sides have, so 1.3 is
// preferred), ECDHE with AEAD suites only for 1.2 (1.3's suites are all AEAD
// and not configurable), ALPN http/1.1 (the WebSocket upgrade), and the
// certificate from r, so that a reload applies to the next handshake.
func ServerTLSConfig(r *CertReloader, minVersion string) (*tls.Config, error) {
	if r == nil {
		return nil, errors.New("tlsconn: nil CertReloader")
	}
	var min uint16
	switch minVersion {
	case "", "1.2":
		min = tls.VersionTLS12
	case "1.3":
		min = tls.VersionTLS13
	default:
		return nil, fmt.Errorf("tlsconn: min_version %q: want \"1.2\" or \"1.3\"", minVersion)
	}
	return &tls.Config{
		MinVersion: min,
		MaxVersion: tls.VersionTLS13,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos:     []string{"http/1.1"},
		GetCertificate: r.GetCertificate,
	}, nil
}

// ReloadInterval is how often a CertReloader looks at its files.
var ReloadInterval = time.Second

// CertReloader serves a certificate and key pair from files and reloads them
// when either file changes (modification time, size or identity, so that an
// atomic rename or a Kubernetes symlink swap counts). A bad pair (half
// written, mismatched) is logged and the previous certificate stays in use;
// the next change is tried again.
type CertReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	cert atomic.Pointer[tls.Certificate]

	mu        sync.Mutex // serialises reloads and guards the stamps
	certStamp os.FileInfo
	keyStamp  os.FileInfo

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// NewCertReloader loads the pair once (an error here should stop the start)
// and polls the files every ReloadInterval until Close.
func NewCertReloader(certFile, keyFile string, log *slog.Logger) (*CertReloader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &CertReloader{certFile: certFile, keyFile: keyFile, log: log,
		stop: make(chan struct{}), done: make(chan struct{})}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	go r.poll()
	return r, nil
}

// GetCertificate is tls.Config.GetCertificate: the current certificate.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}

// Current returns the certificate in use.
func (r *CertReloader) Current() *tls.Certificate { return r.cert.Load() }

// Reload loads the files now (for SIGHUP, say). On error the previous
// certificate stays in use.
func (r *CertReloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cs, err1 := os.Stat(r.certFile)
	ks, err2 := os.Stat(r.keyFile)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("tlsconn: TLS files: %w", err)
	}
	return r.loadLocked(cs, ks)
}

func (r *CertReloader) loadLocked(cs, ks os.FileInfo) error {
	// The stamps move even on failure: a half-written pair is retried when a
	// file changes again, not every second.
	r.certStamp, r.keyStamp = cs, ks
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tlsconn: loading %s and %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert.Store(&cert)
	if leaf := cert.Leaf; leaf != nil {
		r.log.Info("tls certificate loaded", "cert_file", r.certFile,
			"subject", leaf.Subject.String(), "serial", leaf.SerialNumber.String(),
			"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
		if time.Now().After(leaf.NotAfter) {
			r.log.Warn("tls certificate has expired", "cert_file", r.certFile)
		}
	}
	return nil
}

func changed(old, cur os.FileInfo) bool {
	return old == nil || !os.SameFile(old, cur) ||
		!old.ModTime().Equal(cur.ModTime()) || old.Size() != cur.Size()
}

func (r *CertReloader) poll() {
	defer close(r.done)
	t := time.NewTicker(ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		cs, err1 := os.Stat(r.certFile)
		ks, err2 := os.Stat(r.keyFile)
		if err1 != nil || err2 != nil {
			continue // mid-rotation; keep serving the old pair
		}
		r.mu.Lock()
		if changed(r.certStamp, cs) || changed(r.keyStamp, ks) {
			if err := r.loadLocked(cs, ks); err != nil {
				r.log.Error("tls certificate reload failed; keeping the previous one", "err", err)
			}
		}
		r.mu.Unlock()
	}
}

// Close stops the polling goroutine.
func (r *CertReloader) Close() {
	r.stopOnce.Do(func() { close(r.stop) })
	<-r.done
}
