// Writes a key pair as `cosign generate-key-pair` does, for terra's tests: PREFIX.key is the
// PKCS#8 DER of a new ECDSA P-256 key sealed the way go-securesystemslib's `encrypted`
// package seals it (scrypt N=2^16 r=8 p=1 over COSIGN_PASSWORD and a random salt, then NaCl
// secretbox with a random nonce; the parameters, salt, nonce and ciphertext as JSON) in a
// PEM block labelled LABEL; PREFIX.pub is the PKIX public key. Go's crypto and
// golang.org/x/crypto (Debian's golang-golang-x-crypto-dev) do the work.
//
// Usage: cosign-keygen PREFIX LABEL
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"

	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"
)

type scryptParams struct {
	N int `json:"N"`
	R int `json:"r"`
	P int `json:"p"`
}

type kdf struct {
	Name   string       `json:"name"`
	Params scryptParams `json:"params"`
	Salt   []byte       `json:"salt"`
}

type cipher struct {
	Name  string `json:"name"`
	Nonce []byte `json:"nonce"`
}

type sealed struct {
	KDF        kdf    `json:"kdf"`
	Cipher     cipher `json:"cipher"`
	Ciphertext []byte `json:"ciphertext"`
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "cosign-keygen:", err)
		os.Exit(1)
	}
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: cosign-keygen PREFIX LABEL")
		os.Exit(2)
	}
	prefix, label := os.Args[1], os.Args[2]
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	must(err)
	s := sealed{
		KDF:    kdf{Name: "scrypt", Params: scryptParams{N: 65536, R: 8, P: 1}, Salt: make([]byte, 32)},
		Cipher: cipher{Name: "nacl/secretbox", Nonce: make([]byte, 24)},
	}
	_, err = rand.Read(s.KDF.Salt)
	must(err)
	_, err = rand.Read(s.Cipher.Nonce)
	must(err)
	k, err := scrypt.Key([]byte(os.Getenv("COSIGN_PASSWORD")), s.KDF.Salt, s.KDF.Params.N, s.KDF.Params.R, s.KDF.Params.P, 32)
	must(err)
	var key [32]byte
	var nonce [24]byte
	copy(key[:], k)
	copy(nonce[:], s.Cipher.Nonce)
	s.Ciphertext = secretbox.Seal(nil, der, &nonce, &key)
	body, err := json.Marshal(s)
	must(err)
	must(os.WriteFile(prefix+".key", pem.EncodeToMemory(&pem.Block{Type: label, Bytes: body}), 0o600))
	pub, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	must(err)
	must(os.WriteFile(prefix+".pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644))
}
