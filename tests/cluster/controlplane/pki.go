package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// A certificate to write: its file stem, subject and use.
type certSpec struct {
	name    string
	cn      string
	orgs    []string
	server  bool
	client  bool
	withSAN bool
}

// The control plane's certificates. Every client identity is a member of
// system:masters except the ones named after what they are, which keeps the set small.
var certSpecs = []certSpec{
	{name: "apiserver", cn: "kube-apiserver", server: true, withSAN: true},
	{name: "admin", cn: "clusterbisect-admin", orgs: []string{"system:masters"}, client: true},
	{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true},
	{name: "kubelet", cn: "clusterbisect-test-node", server: true, withSAN: true},
}

// runPKI writes ca.{crt,key}, one certificate and key per certSpecs entry, and the
// service-account key pair (sa.key, sa.pub) into DIR. Existing files are kept.
func runPKI(args []string) int {
	if len(args) < 1 {
		fmt.Fprintln(os.Stderr, "pki: usage: kcp pki DIR [SAN...]")
		return 2
	}
	dir, sans := args[0], args[1:]
	if err := writePKI(dir, sans); err != nil {
		fmt.Fprintf(os.Stderr, "pki: %v\n", err)
		return 3
	}
	return 0
}

func writePKI(dir string, sans []string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "ca.crt")); err == nil {
		return nil // already written: certificates are reused across restarts
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now().Add(-time.Hour)
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "clusterbisect-test-ca"},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	for i, spec := range certSpecs {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		template := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)),
			Subject:      pkix.Name{CommonName: spec.cn, Organization: spec.orgs},
			NotBefore:    now,
			NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		}
		if spec.server {
			template.ExtKeyUsage = append(template.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		}
		if spec.client {
			template.ExtKeyUsage = append(template.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
		}
		if spec.withSAN {
			template.DNSNames = []string{"localhost", "kubernetes", "kubernetes.default",
				"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
			template.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")}
			for _, san := range sans {
				if ip := net.ParseIP(san); ip != nil {
					template.IPAddresses = append(template.IPAddresses, ip)
				} else {
					template.DNSNames = append(template.DNSNames, san)
				}
			}
		}
		der, err := x509.CreateCertificate(rand.Reader, template, caCert, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		if err := writePEM(dir, spec.name+".crt", "CERTIFICATE", der); err != nil {
			return err
		}
		if err := writeKey(dir, spec.name+".key", key); err != nil {
			return err
		}
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	if err := writePEM(dir, "sa.key", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	if err := writePEM(dir, "sa.pub", "PUBLIC KEY", pub); err != nil {
		return err
	}
	if err := writeKey(dir, "ca.key", caKey); err != nil {
		return err
	}
	// ca.crt last: its presence says the set is complete.
	return writePEM(dir, "ca.crt", "CERTIFICATE", caDER)
}

func writeKey(dir, name string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(dir, name, "EC PRIVATE KEY", der)
}

func writePEM(dir, name, kind string, der []byte) error {
	data := pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
	return os.WriteFile(filepath.Join(dir, name), data, 0o600)
}
