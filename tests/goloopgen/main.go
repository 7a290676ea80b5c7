// goloopgen grows a goloop-shaped node directory with goleveldb itself
// (syndtr/goleveldb, the library and defaults goloop uses: snappy, 2 MiB
// tables, 4 MiB write buffer), block by block, as a node finalizes them:
// per block one write batch with the trie nodes the block changed
// (key sha3-256(node), value an RLP list of hashes), the v2 header under
// "S" || sha3-256(header), the votes, the transaction locators, the height
// index "H" || RLP(height) -> hash and "Cblock.lastHeight" -> RLP(height).
//
//	goloopgen -dir NODE_DIR -blocks N [-seed S] [-trie K] [-txs T]
//
// Creates NODE_DIR/1/{config.json,genesis.zip,db/1/,wal/,contract/} on the
// first run, continues from the database's last height on later runs, and
// prints {"height":H,"hash":"<hex>"} of the last block. Built in GOPATH
// mode against Debian's packaged goleveldb and x/crypto (no module proxy).
package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	mrand "math/rand"
	"os"
	"path/filepath"

	"github.com/syndtr/goleveldb/leveldb"
	"golang.org/x/crypto/sha3"
)

// goloop's RLP: minimal big-endian two's complement integers (0 is 00).
func intBytes(v int64) []byte {
	if v == 0 {
		return []byte{0}
	}
	var b []byte
	for x := v; ; x >>= 8 {
		b = append([]byte{byte(x)}, b...)
		if (x >= -128 && x <= 127) {
			break
		}
	}
	return b
}

func rlpBytes(b []byte) []byte {
	if len(b) == 1 && b[0] < 0x80 {
		return []byte{b[0]}
	}
	return append(rlpHead(0x80, len(b)), b...)
}

func rlpHead(base byte, n int) []byte {
	if n <= 55 {
		return []byte{base + byte(n)}
	}
	var size []byte
	for x := n; x > 0; x >>= 8 {
		size = append([]byte{byte(x)}, size...)
	}
	return append([]byte{base + 55 + byte(len(size))}, size...)
}

func rlpList(items ...[]byte) []byte {
	var body []byte
	for _, it := range items {
		body = append(body, it...)
	}
	return append(rlpHead(0xc0, len(body)), body...)
}

func rlpInt(v int64) []byte { return rlpBytes(intBytes(v)) }

func sum(b []byte) []byte { h := sha3.Sum256(b); return h[:] }

func random(r *mrand.Rand, n int) []byte {
	b := make([]byte, n)
	r.Read(b)
	return b
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "goloopgen:", err)
		os.Exit(1)
	}
}

func main() {
	dir := flag.String("dir", "", "node directory")
	blocks := flag.Int64("blocks", 100, "blocks to add")
	seed := flag.Int64("seed", 7, "seed")
	trie := flag.Int("trie", 40, "trie nodes written per block")
	txs := flag.Int("txs", 20, "transactions per block")
	torn := flag.Bool("torn", false, "then record a last height one past the last block (a database not at a block boundary)")
	flag.Parse()
	if *dir == "" {
		must(fmt.Errorf("-dir is required"))
	}
	chain := filepath.Join(*dir, "1")
	for _, d := range []string{"db", "wal", "contract/0x1a2b3c"} {
		must(os.MkdirAll(filepath.Join(chain, d), 0o755))
	}
	if _, err := os.Stat(filepath.Join(chain, "config.json")); os.IsNotExist(err) {
		must(os.WriteFile(filepath.Join(chain, "config.json"),
			[]byte(`{"nid":"0x1","db_type":"goleveldb","platform":"icon","channel":"icon_dex","role":3}`+"\n"), 0o644))
		gs := make([]byte, 64<<10)
		rand.Read(gs)
		must(os.WriteFile(filepath.Join(chain, "genesis.zip"), gs, 0o644))
		must(os.WriteFile(filepath.Join(chain, "contract/0x1a2b3c/score.py"), []byte("class Governance: pass\n"), 0o644))
	}
	db, err := leveldb.OpenFile(filepath.Join(chain, "db", "1"), nil)
	must(err)
	last := int64(0)
	if v, err := db.Get([]byte("Cblock.lastHeight"), nil); err == nil {
		// RLP of a small integer: the byte itself, or 0x80+len then bytes.
		b := v
		if len(b) > 0 && b[0] >= 0x80 {
			b = b[1:]
		}
		for _, x := range b {
			last = last<<8 | int64(x)
		}
	}
	r := mrand.New(mrand.NewSource(*seed + last))
	prev := make([]byte, 32)
	if last > 0 {
		if p, err := db.Get(append([]byte("H"), rlpInt(last)...), nil); err == nil {
			prev = p
		}
	}
	proposer := append([]byte{0}, random(r, 20)...)
	var hash []byte
	for h := last + 1; h <= last+*blocks; h++ {
		batch := new(leveldb.Batch)
		var nodes [][]byte
		for i := 0; i < *trie; i++ {
			// Branch nodes: 16 child hashes and a value; leaves: a path and a value.
			var node []byte
			if i%3 == 0 {
				kids := make([][]byte, 17)
				for k := 0; k < 16; k++ {
					kids[k] = rlpBytes(random(r, 32))
				}
				kids[16] = rlpBytes(nil)
				node = rlpList(kids...)
			} else {
				node = rlpList(rlpBytes(random(r, 1+r.Intn(32))), rlpBytes(random(r, 40+r.Intn(160))))
			}
			nodes = append(nodes, node)
			batch.Put(sum(node), node)
		}
		var txHashes [][]byte
		for i := 0; i < *txs; i++ {
			tx := random(r, 32)
			txHashes = append(txHashes, rlpBytes(tx))
			batch.Put(append([]byte("T"), tx...), rlpList(rlpInt(h), rlpInt(int64(i))))
		}
		var sigs [][]byte
		for v := 0; v < 22; v++ {
			sigs = append(sigs, rlpList(rlpInt(int64(v)), rlpBytes(random(r, 65))))
		}
		votes := rlpList(sigs...)
		batch.Put(append([]byte("S"), sum(votes)...), votes)
		txList := rlpList(txHashes...)
		batch.Put(append([]byte("S"), sum(txList)...), txList)
		header := rlpList(
			rlpInt(2), rlpInt(h), rlpInt(1_700_000_000_000_000+h*2_000_000),
			rlpBytes(proposer), rlpBytes(prev), rlpBytes(sum(votes)), rlpBytes(random(r, 32)),
			rlpBytes(nil), rlpBytes(sum(txList)), rlpBytes(make([]byte, 0)), rlpBytes(sum(nodes[0])),
		)
		hash = sum(header)
		batch.Put(append([]byte("S"), hash...), header)
		batch.Put(append([]byte("H"), rlpInt(h)...), hash)
		batch.Put([]byte("Cblock.lastHeight"), rlpInt(h))
		must(db.Write(batch, nil))
		prev = hash
		if h%50 == 0 {
			must(os.WriteFile(filepath.Join(chain, "wal", "round_0"), random(r, 512), 0o644))
		}
	}
	if *torn {
		must(db.Put([]byte("Cblock.lastHeight"), rlpInt(last+*blocks+1), nil))
	}
	must(db.Close())
	out, _ := json.Marshal(map[string]interface{}{"height": last + *blocks, "hash": hex.EncodeToString(hash)})
	fmt.Println(string(out))
}
