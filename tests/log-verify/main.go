// Command log-verify checks tresor-router's transparency log (issue 19, "Independent
// verification") with code none of us wrote: golang.org/x/mod/sumdb/tlog and sumdb/note, the
// tiled-log and signed-note implementation behind Go's checksum database.
//
// It fetches the latest checkpoint from a running gateway, verifies its note signature with the
// given verifier key, recomputes the root from the C2SP tlog-tiles (tlog.TileHashReader checks
// the tiles it reads against that root; see verifyAllTiles) and again from the entry bundles
// alone, checks every entry against its level-0 tile hash, and checks each receipt given in
// --receipts: its leaf is the entry at its log_index, its inclusion proof (from the API) verifies
// against the checkpoint it came with, that checkpoint is consistent with the latest one (by a
// proof built here from the tiles and by /v1/log/proof/consistency), and inclusion proofs against
// the latest checkpoint built here from the tiles and served by /v1/log/proof/inclusion verify.
// Every tile is also compared with the tile the entries imply, and no entry may be logged twice.
//
// Exit status: 0 all checks passed ("PASS ..." on stdout), 1 a check failed ("FAIL: ..." on
// stderr), 2 bad usage.
//
// Build offline with the Debian packages golang-go and golang-golang-x-mod-dev, in GOPATH mode
// (the package's sources live under /usr/share/gocode/src and need nothing but the standard
// library):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=$(mktemp -d) \
//	    go build -o log-verify tests/log-verify/main.go
//
// Usage: log-verify --url BASE --vkey VKEY [--receipts FILE]
//
// FILE holds one GET /v1/receipts/{id} answer per line:
// {"id", "receipt" (compact JWS), "log_index", "checkpoint", "inclusion_proof": [base64...]}.
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// tileHeight is fixed by C2SP tlog-tiles.
const tileHeight = 8

const tileWidth = 1 << tileHeight

// maxBody bounds any single response (a full tile is 8 KiB, a full bundle of 32-byte entries 8.5 KiB).
const maxBody = 1 << 20

var failf = fmt.Errorf

// checkpoint is a C2SP tlog-checkpoint body: origin, tree size and root hash (extension lines,
// if any, are ignored). tlog.ParseTree only reads the "go.sum database tree" header, so the
// three lines are parsed here.
type checkpoint struct {
	origin string
	tree   tlog.Tree
}

func parseCheckpoint(text string) (checkpoint, error) {
	lines := strings.Split(text, "\n")
	if len(lines) < 4 || !strings.HasSuffix(text, "\n") {
		return checkpoint{}, errors.New("checkpoint body has fewer than 3 lines")
	}
	origin := lines[0]
	if origin == "" {
		return checkpoint{}, errors.New("checkpoint origin line is empty")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || lines[1] != strconv.FormatInt(size, 10) {
		return checkpoint{}, fmt.Errorf("checkpoint size line %q is not a canonical decimal", lines[1])
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return checkpoint{}, fmt.Errorf("checkpoint root line %q is not a base64 SHA-256 hash", lines[2])
	}
	var h tlog.Hash
	copy(h[:], root)
	return checkpoint{origin: origin, tree: tlog.Tree{N: size, Hash: h}}, nil
}

// openCheckpoint verifies a signed checkpoint note with the log's verifier and parses it. The
// key name must be the origin (C2SP tlog-checkpoint); cosignatures by other keys are ignored.
func openCheckpoint(msg []byte, verifier note.Verifier) (checkpoint, error) {
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		return checkpoint{}, fmt.Errorf("note signature by %s: %v", verifier.Name(), err)
	}
	cp, err := parseCheckpoint(n.Text)
	if err != nil {
		return checkpoint{}, err
	}
	if cp.origin != verifier.Name() {
		return checkpoint{}, fmt.Errorf("origin %q is not the key name %q", cp.origin, verifier.Name())
	}
	return cp, nil
}

type fetcher struct {
	base   string
	client *http.Client
}

func (f *fetcher) get(path string) ([]byte, error) {
	resp, err := f.client.Get(f.base + path)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: reading body: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d: %.200s", path, resp.StatusCode, body)
	}
	if len(body) > maxBody {
		return nil, fmt.Errorf("GET %s: body over %d bytes", path, maxBody)
	}
	return body, nil
}

func (f *fetcher) getJSON(path string, v interface{}) error {
	body, err := f.get(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: %v", path, err)
	}
	return nil
}

// c2spTilePath maps a tlog tile to its C2SP tlog-tiles path. tlog.Tile.Path writes
// "tile/H/L/x001/x234/067[.p/W]" (sumdb keeps the height in the path, and "data" for L=-1);
// C2SP uses the same N grouping and partial suffix without the height, and "entries" for the
// data level. Reusing tlog's own encoding keeps the N/W formatting someone else's code.
func c2spTilePath(t tlog.Tile) string {
	p := strings.TrimPrefix(t.Path(), fmt.Sprintf("tile/%d/", t.H))
	if t.L == -1 {
		p = "entries" + strings.TrimPrefix(p, "data")
	}
	return "/v1/log/tile/" + p
}

// tileReader serves tlog.TileHashReader from the gateway. Tiles are cached in memory: the hash
// reader authenticates the data against the tree hash on every ReadHashes call anyway.
type tileReader struct {
	f     *fetcher
	cache map[tlog.Tile][]byte
}

func (r *tileReader) Height() int { return tileHeight }

func (r *tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		if data, ok := r.cache[t]; ok {
			out[i] = data
			continue
		}
		data, err := r.f.get(c2spTilePath(t))
		if err != nil {
			return nil, err
		}
		if len(data) != t.W*tlog.HashSize {
			return nil, failf("tile %s: %d bytes, want %d (%d hashes)", c2spTilePath(t), len(data), t.W*tlog.HashSize, t.W)
		}
		r.cache[t] = data
		out[i] = data
	}
	return out, nil
}

func (r *tileReader) SaveTiles([]tlog.Tile, [][]byte) {}

// parseBundle splits a C2SP entry bundle (uint16 BE length || entry, repeated) into want entries.
func parseBundle(data []byte, want int) ([][]byte, error) {
	var entries [][]byte
	for len(data) > 0 {
		if len(data) < 2 {
			return nil, errors.New("truncated length prefix")
		}
		n := int(binary.BigEndian.Uint16(data))
		data = data[2:]
		if len(data) < n {
			return nil, fmt.Errorf("entry %d: length %d but %d bytes left", len(entries), n, len(data))
		}
		entries = append(entries, data[:n])
		data = data[n:]
	}
	if len(entries) != want {
		return nil, fmt.Errorf("%d entries, want %d", len(entries), want)
	}
	return entries, nil
}

// verifyEntries fetches every entry bundle of the tree and checks each entry's record hash
// against the level-0 hash read (and authenticated) through the tiles.
func verifyEntries(f *fetcher, tree tlog.Tree, hr tlog.HashReader) ([][]byte, error) {
	entries := make([][]byte, 0, tree.N)
	for start := int64(0); start < tree.N; start += tileWidth {
		w := tree.N - start
		if w > tileWidth {
			w = tileWidth
		}
		t := tlog.Tile{H: tileHeight, L: -1, N: start / tileWidth, W: int(w)}
		data, err := f.get(c2spTilePath(t))
		if err != nil {
			return nil, err
		}
		bundle, err := parseBundle(data, int(w))
		if err != nil {
			return nil, failf("entry bundle %s: %v", c2spTilePath(t), err)
		}
		indexes := make([]int64, w)
		for i := range indexes {
			indexes[i] = tlog.StoredHashIndex(0, start+int64(i))
		}
		leaves, err := hr.ReadHashes(indexes)
		if err != nil {
			return nil, failf("level-0 tile hashes for entries %d..%d: %v", start, start+w-1, err)
		}
		for i, e := range bundle {
			// Our contract: an entry is the SHA-256 of a receipt's claims.
			if len(e) != sha256.Size {
				return nil, failf("entry %d is %d bytes, want %d", start+int64(i), len(e), sha256.Size)
			}
			if tlog.RecordHash(e) != leaves[i] {
				return nil, failf("entry %d: record hash %s differs from the level-0 tile hash %s",
					start+int64(i), tlog.RecordHash(e), leaves[i])
			}
		}
		entries = append(entries, bundle...)
	}
	return entries, nil
}

// rootFromEntries recomputes the tree hash from the entries alone (no tiles): tlog.StoredHashes
// appends each record's stored hashes, and TreeHash reads them back from memory.
func rootFromEntries(entries [][]byte) (tlog.Hash, tlog.HashReader, error) {
	var stored []tlog.Hash
	mem := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, x := range indexes {
			if x < 0 || x >= int64(len(stored)) {
				return nil, fmt.Errorf("stored hash %d not computed", x)
			}
			out[i] = stored[x]
		}
		return out, nil
	})
	for i, e := range entries {
		hs, err := tlog.StoredHashes(int64(i), e, mem)
		if err != nil {
			return tlog.Hash{}, nil, err
		}
		stored = append(stored, hs...)
	}
	root, err := tlog.TreeHash(int64(len(entries)), mem)
	return root, mem, err
}

// verifyAllTiles checks every hash tile of the tree, at every level, against the tile the
// entries imply. tlog.TileHashReader authenticates the tiles it reads against the root, but in
// x/mod 0.7.0 it skips the parent check of lower tiles when several of the root's subtrees share
// one tile (its loop starts at the number of subtree indexes, not of their tiles): a corrupt
// level-0 tile under an intact level-1 tile was accepted in a 300-entry log. Comparing each
// tile to the hashes recomputed from the (root-checked) entries closes that gap.
func verifyAllTiles(tr *tileReader, tree tlog.Tree, mem tlog.HashReader) error {
	var tiles []tlog.Tile
	for level := 0; tree.N>>(tileHeight*level) > 0; level++ {
		count := tree.N >> (tileHeight * level)
		for n := int64(0); n < count/tileWidth; n++ {
			tiles = append(tiles, tlog.Tile{H: tileHeight, L: level, N: n, W: tileWidth})
		}
		if rest := count % tileWidth; rest > 0 {
			tiles = append(tiles, tlog.Tile{H: tileHeight, L: level, N: count / tileWidth, W: int(rest)})
		}
	}
	for _, t := range tiles {
		got, err := tr.ReadTiles([]tlog.Tile{t})
		if err != nil {
			return err
		}
		want, err := tlog.ReadTileData(t, mem)
		if err != nil {
			return failf("tile %s from the entries: %v", c2spTilePath(t), err)
		}
		if !bytes.Equal(got[0], want) {
			return failf("tile %s differs from the hashes the entry bundles imply", c2spTilePath(t))
		}
	}
	return nil
}

// receiptAnswer is one GET /v1/receipts/{id} answer.
type receiptAnswer struct {
	ID             string    `json:"id"`
	Receipt        string    `json:"receipt"`
	LogIndex       *int64    `json:"log_index"`
	Checkpoint     *string   `json:"checkpoint"`
	InclusionProof *[]string `json:"inclusion_proof"`
}

// receiptEntry is the logged entry of a compact JWS: SHA-256 of its base64url-decoded payload
// (the claims bytes). The payload's jti must be the receipt id.
func receiptEntry(ra receiptAnswer) ([]byte, error) {
	parts := strings.Split(ra.Receipt, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("receipt is not a compact JWS (%d parts)", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("JWS payload is not base64url: %v", err)
	}
	var claims struct {
		Jti string `json:"jti"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, fmt.Errorf("JWS payload is not JSON: %v", err)
	}
	if claims.Jti != ra.ID {
		return nil, fmt.Errorf("JWS payload jti %q is not the receipt id", claims.Jti)
	}
	sum := sha256.Sum256(payload)
	return sum[:], nil
}

func decodeProof(b64s []string) (tlog.RecordProof, error) {
	p := make(tlog.RecordProof, len(b64s))
	for i, s := range b64s {
		h, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(h) != tlog.HashSize {
			return nil, fmt.Errorf("proof hash %d %q is not a base64 SHA-256 hash", i, s)
		}
		copy(p[i][:], h)
	}
	return p, nil
}

// verifyReceipt checks one receipt against the latest checkpoint `latest`, its entries and the
// tile hash reader.
func verifyReceipt(f *fetcher, ra receiptAnswer, verifier note.Verifier, latest checkpoint, entries [][]byte, hr tlog.HashReader) error {
	if ra.LogIndex == nil || ra.Checkpoint == nil || ra.InclusionProof == nil {
		return errors.New("answer lacks log_index, checkpoint or inclusion_proof")
	}
	idx := *ra.LogIndex
	entry, err := receiptEntry(ra)
	if err != nil {
		return err
	}
	if idx < 0 || idx >= latest.tree.N {
		return fmt.Errorf("log_index %d is outside the latest checkpoint (size %d)", idx, latest.tree.N)
	}
	if !bytes.Equal(entries[idx], entry) {
		return fmt.Errorf("log entry %d is %x, but SHA-256(receipt payload) is %x", idx, entries[idx], entry)
	}
	leaf := tlog.RecordHash(entry)

	// The proof the API gave, against the checkpoint it came with.
	cp, err := openCheckpoint([]byte(*ra.Checkpoint), verifier)
	if err != nil {
		return fmt.Errorf("receipt's checkpoint: %v", err)
	}
	if idx >= cp.tree.N {
		return fmt.Errorf("log_index %d is outside the receipt's checkpoint (size %d)", idx, cp.tree.N)
	}
	proof, err := decodeProof(*ra.InclusionProof)
	if err != nil {
		return err
	}
	if err := tlog.CheckRecord(proof, cp.tree.N, cp.tree.Hash, idx, leaf); err != nil {
		return fmt.Errorf("inclusion_proof for index %d in size %d: %v", idx, cp.tree.N, err)
	}

	// That checkpoint must be a prefix of the latest one (else the log forked or rolled back).
	if err := checkConsistent(f, cp, latest, hr); err != nil {
		return err
	}

	// A proof built here from the authenticated tiles, against the latest checkpoint.
	own, err := tlog.ProveRecord(latest.tree.N, idx, hr)
	if err != nil {
		return fmt.Errorf("building an inclusion proof from the tiles: %v", err)
	}
	if err := tlog.CheckRecord(own, latest.tree.N, latest.tree.Hash, idx, leaf); err != nil {
		return fmt.Errorf("tile-built inclusion proof for index %d in size %d: %v", idx, latest.tree.N, err)
	}

	// The convenience endpoint's proof, against the latest checkpoint.
	var inc struct {
		Index int64    `json:"index"`
		Size  int64    `json:"size"`
		Proof []string `json:"proof"`
	}
	if err := f.getJSON(fmt.Sprintf("/v1/log/proof/inclusion?index=%d&size=%d", idx, latest.tree.N), &inc); err != nil {
		return err
	}
	if inc.Index != idx || inc.Size != latest.tree.N {
		return fmt.Errorf("/v1/log/proof/inclusion answered index %d size %d, asked %d and %d", inc.Index, inc.Size, idx, latest.tree.N)
	}
	if proof, err = decodeProof(inc.Proof); err != nil {
		return fmt.Errorf("/v1/log/proof/inclusion: %v", err)
	}
	if err := tlog.CheckRecord(proof, latest.tree.N, latest.tree.Hash, idx, leaf); err != nil {
		return fmt.Errorf("/v1/log/proof/inclusion for index %d in size %d: %v", idx, latest.tree.N, err)
	}
	return nil
}

func checkConsistent(f *fetcher, old, latest checkpoint, hr tlog.HashReader) error {
	switch {
	case old.tree.N > latest.tree.N:
		return fmt.Errorf("receipt's checkpoint (size %d) is newer than the latest (size %d): rollback", old.tree.N, latest.tree.N)
	case old.tree.N == latest.tree.N:
		if old.tree.Hash != latest.tree.Hash {
			return fmt.Errorf("receipt's checkpoint and the latest have size %d but different roots: fork", old.tree.N)
		}
		return nil
	}
	tp, err := tlog.ProveTree(latest.tree.N, old.tree.N, hr)
	if err != nil {
		return fmt.Errorf("building a consistency proof %d -> %d from the tiles: %v", old.tree.N, latest.tree.N, err)
	}
	if err := tlog.CheckTree(tp, latest.tree.N, latest.tree.Hash, old.tree.N, old.tree.Hash); err != nil {
		return fmt.Errorf("receipt's checkpoint (size %d) is not a prefix of the latest (size %d): %v", old.tree.N, latest.tree.N, err)
	}

	// The gateway's own consistency proof (what verify-log and witnesses use) must verify too.
	var cons struct {
		Old   int64    `json:"old"`
		New   int64    `json:"new"`
		Proof []string `json:"proof"`
	}
	if err := f.getJSON(fmt.Sprintf("/v1/log/proof/consistency?old=%d&new=%d", old.tree.N, latest.tree.N), &cons); err != nil {
		return err
	}
	if cons.Old != old.tree.N || cons.New != latest.tree.N {
		return fmt.Errorf("/v1/log/proof/consistency answered old %d new %d, asked %d and %d", cons.Old, cons.New, old.tree.N, latest.tree.N)
	}
	hashes, err := decodeProof(cons.Proof)
	if err != nil {
		return fmt.Errorf("/v1/log/proof/consistency: %v", err)
	}
	if err := tlog.CheckTree(tlog.TreeProof(hashes), latest.tree.N, latest.tree.Hash, old.tree.N, old.tree.Hash); err != nil {
		return fmt.Errorf("/v1/log/proof/consistency?old=%d&new=%d: %v", old.tree.N, latest.tree.N, err)
	}
	return nil
}

func readReceipts(path string) ([]receiptAnswer, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	var out []receiptAnswer
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 0, 64*1024), maxBody)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var ra receiptAnswer
		if err := json.Unmarshal([]byte(text), &ra); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		out = append(out, ra)
	}
	return out, sc.Err()
}

func run(base, vkey, receiptsPath string) error {
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return failf("--vkey: %v", err)
	}
	f := &fetcher{base: strings.TrimRight(base, "/"), client: &http.Client{Timeout: 30 * time.Second}}

	msg, err := f.get("/v1/log/checkpoint")
	if err != nil {
		return err
	}
	latest, err := openCheckpoint(msg, verifier)
	if err != nil {
		return failf("checkpoint: %v", err)
	}
	tree := latest.tree
	if tree.N == 0 {
		// tlog.TreeHash(0) is all zeros; RFC 9162's empty root is SHA-256("").
		if tree.Hash != tlog.Hash(sha256.Sum256(nil)) {
			return failf("empty log: root %s is not SHA-256 of the empty string", tree.Hash)
		}
	}

	tr := &tileReader{f: f, cache: map[tlog.Tile][]byte{}}
	hr := tlog.TileHashReader(tree, tr)
	if tree.N > 0 {
		root, err := tlog.TreeHash(tree.N, hr)
		if err != nil {
			return failf("recomputing the root from the tiles: %v", err)
		}
		if root != tree.Hash {
			return failf("root from the tiles %s differs from the checkpoint's %s", root, tree.Hash)
		}
	}

	entries, err := verifyEntries(f, tree, hr)
	if err != nil {
		return err
	}
	root, mem, err := rootFromEntries(entries)
	if err != nil {
		return failf("recomputing the root from the entry bundles: %v", err)
	}
	if tree.N > 0 && root != tree.Hash {
		return failf("root from the entry bundles %s differs from the checkpoint's %s", root, tree.Hash)
	}
	if err := verifyAllTiles(tr, tree, mem); err != nil {
		return err
	}
	seen := make(map[string]int64, len(entries))
	for i, e := range entries {
		if j, dup := seen[string(e)]; dup {
			return failf("entry %x is logged twice (indexes %d and %d)", e, j, i)
		}
		seen[string(e)] = int64(i)
	}

	checked := 0
	if receiptsPath != "" {
		answers, err := readReceipts(receiptsPath)
		if err != nil {
			return failf("--receipts: %v", err)
		}
		for _, ra := range answers {
			if err := verifyReceipt(f, ra, verifier, latest, entries, hr); err != nil {
				return failf("receipt %s: %v", ra.ID, err)
			}
			checked++
		}
	}
	fmt.Printf("PASS %s size %d root %s: tiles and %d entries verified, %d receipts included\n",
		latest.origin, tree.N, tree.Hash, len(entries), checked)
	return nil
}

func main() {
	base := flag.String("url", "", "gateway base URL, e.g. http://127.0.0.1:8080")
	vkey := flag.String("vkey", "", "the log's note verifier key <origin>+<hash>+<base64 key>")
	receipts := flag.String("receipts", "", "file of GET /v1/receipts/{id} answers, one JSON per line (optional)")
	flag.Parse()
	if *base == "" || *vkey == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: log-verify --url BASE --vkey VKEY [--receipts FILE]")
		os.Exit(2)
	}
	if err := run(*base, *vkey, *receipts); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		os.Exit(1)
	}
}
