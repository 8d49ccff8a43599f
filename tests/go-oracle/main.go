// go-oracle: how Go's net/http and net/url (what kube-apiserver is built on) read a
// request target. For every request it answers, as JSON, the method, the request URI,
// URL.Path (every %XX decoded), URL.RawPath, URL.RawQuery, URL.Query() and the error
// of url.ParseQuery, and appends the same JSON as one line to the -record file.
//
// Go strings are bytes and may hold non-UTF-8; encoding/json would replace those, so
// every byte string is also given in hex (the *Hex fields, queryPairs).
//
// Standard library only. Prints the address it listens on as the first line of stdout.
package main

import (
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"sync"
)

type pair struct {
	Key       string   `json:"key"`
	KeyHex    string   `json:"keyHex"`
	Values    []string `json:"values"`
	ValuesHex []string `json:"valuesHex"`
}

type reading struct {
	Method        string              `json:"method"`
	RequestURI    string              `json:"requestURI"`
	RequestURIHex string              `json:"requestURIHex"`
	Path          string              `json:"path"`
	PathHex       string              `json:"pathHex"`
	RawPath       string              `json:"rawPath"`
	RawPathHex    string              `json:"rawPathHex"`
	RawQuery      string              `json:"rawQuery"`
	RawQueryHex   string              `json:"rawQueryHex"`
	Query         map[string][]string `json:"query"`
	QueryPairs    []pair              `json:"queryPairs"`
	QueryError    string              `json:"queryError"`
}

func read(r *http.Request) reading {
	query := r.URL.Query()
	pairs := []pair{}
	for key, values := range query {
		p := pair{Key: key, KeyHex: hex.EncodeToString([]byte(key)), Values: values, ValuesHex: []string{}}
		for _, v := range values {
			p.ValuesHex = append(p.ValuesHex, hex.EncodeToString([]byte(v)))
		}
		pairs = append(pairs, p)
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].Key < pairs[j].Key })
	queryError := ""
	if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
		queryError = err.Error()
	}
	return reading{
		Method:        r.Method,
		RequestURI:    r.RequestURI,
		RequestURIHex: hex.EncodeToString([]byte(r.RequestURI)),
		Path:          r.URL.Path,
		PathHex:       hex.EncodeToString([]byte(r.URL.Path)),
		RawPath:       r.URL.RawPath,
		RawPathHex:    hex.EncodeToString([]byte(r.URL.RawPath)),
		RawQuery:      r.URL.RawQuery,
		RawQueryHex:   hex.EncodeToString([]byte(r.URL.RawQuery)),
		Query:         query,
		QueryPairs:    pairs,
		QueryError:    queryError,
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0: any free port)")
	record := flag.String("record", "", "append every reading to this file, one JSON line each")
	cert := flag.String("tls-cert", "", "serve TLS (and HTTP/2) with this certificate")
	key := flag.String("tls-key", "", "and this key")
	flag.Parse()

	var mu sync.Mutex
	var out *os.File
	if *record != "" {
		f, err := os.OpenFile(*record, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		out = f
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		line, err := json.Marshal(read(r))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if out != nil {
			mu.Lock()
			out.Write(append(line, '\n'))
			mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(line)
	})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	server := &http.Server{Handler: handler}
	if *cert != "" {
		err = server.ServeTLS(ln, *cert, *key)
	} else {
		err = server.Serve(ln)
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
