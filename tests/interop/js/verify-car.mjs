// Read a CAR file the way a Helia node does and check every byte of it. Prints
//   {"roots": [...], "blocks": N, "verified": N, "bad": [...], "missing": [...],
//    "duplicates": N, "unreachable": N, "unixfs": {...}, "errors": [...]}
// and exits 1 on any failure (2 on bad usage).
// Usage: node --import ./polyfill.mjs verify-car.mjs <file.car>
//
// 1. @ipld/car CarReader parses the file (header, roots, every section);
// 2. every block is hashed (sha2-256) and compared with the multihash in its CID;
// 3. the blocks are imported into an offline Helia node (@helia/car `import`);
// 4. the DAG is walked from every root through Helia's blockstore (offline: a missing block is an
//    error, never a network fetch), following links of dag-pb, raw and dag-cbor blocks, so every
//    reachable CID must be in the CAR ("missing" lists those that are not);
// 5. a dag-pb/raw root is read back with @helia/unixfs: files are cat'ed to the end (the byte
//    count must equal the UnixFS size), directories (flat or HAMT) are listed recursively and
//    every entry is read the same way, symlinks are stat'ed.
// The Helia node has no network: only a loopback TCP listener, no bootstrap, mDNS, UPnP,
// autoNAT, relay, DHT or delegated routing, and no HTTP gateways.
import { car } from '@helia/car'
import { unixfs } from '@helia/unixfs'
import { CarReader } from '@ipld/car'
import * as dagCbor from '@ipld/dag-cbor'
import * as dagPb from '@ipld/dag-pb'
import { identify } from '@libp2p/identify'
import { noise } from '@libp2p/noise'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { createHelia } from 'helia'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { createReadStream } from 'node:fs'

const SHA2_256 = 0x12
const IDENTITY = 0x00

const file = process.argv[2]
if (file == null || process.argv.length !== 3) {
  process.stderr.write('usage: node --import ./polyfill.mjs verify-car.mjs <file.car>\n')
  process.exit(2)
}

const report = {
  roots: [],
  blocks: 0,
  verified: 0,
  bad: [],
  missing: [],
  duplicates: 0,
  unreachable: 0,
  unixfs: null,
  errors: []
}

function eq (a, b) {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

// interface-blockstore 7 returns a block as a stream of chunks; older versions as bytes.
async function toBytes (value) {
  const v = await value
  if (v instanceof Uint8Array) return v
  const chunks = []
  let n = 0
  for await (const c of v) { chunks.push(c); n += c.byteLength }
  const out = new Uint8Array(n)
  let off = 0
  for (const c of chunks) { out.set(c, off); off += c.byteLength }
  return out
}

function linksOf (cid, bytes) {
  if (cid.code === dagPb.code) return dagPb.decode(bytes).Links.map((l) => l.Hash)
  if (cid.code === raw.code) return []
  if (cid.code === dagCbor.code) {
    const out = []
    const visit = (v) => {
      const asCid = CID.asCID(v)
      if (asCid != null) { out.push(asCid); return }
      if (Array.isArray(v)) { v.forEach(visit); return }
      if (v != null && typeof v === 'object' && !(v instanceof Uint8Array)) Object.values(v).forEach(visit)
    }
    visit(dagCbor.decode(bytes))
    return out
  }
  throw new Error(`unsupported codec 0x${cid.code.toString(16)} in ${cid}`)
}

async function main () {
  // 1 + 2: parse and hash every block.
  const reader = await CarReader.fromIterable(createReadStream(file))
  report.roots = (await reader.getRoots()).map(String)
  const seen = new Set()
  for await (const { cid, bytes } of reader.blocks()) {
    report.blocks++
    const key = cid.toString()
    if (seen.has(key)) report.duplicates++
    seen.add(key)
    if (cid.multihash.code === IDENTITY) {
      if (eq(cid.multihash.digest, bytes)) report.verified++
      else report.bad.push(key)
    } else if (cid.multihash.code === SHA2_256) {
      const digest = await sha256.digest(bytes)
      if (eq(digest.bytes, cid.multihash.bytes)) report.verified++
      else report.bad.push(key)
    } else {
      report.bad.push(key)
      report.errors.push(`${key}: unsupported hash 0x${cid.multihash.code.toString(16)}`)
    }
  }
  if (report.roots.length === 0) report.errors.push('CAR has no roots')

  // 3: into an offline Helia node.
  const helia = await createHelia({
    libp2p: {
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      peerDiscovery: [],
      services: { identify: identify() }
    },
    http: { delegatedRouters: [], recursiveGateways: [] },
    routers: []
  })
  await helia.start()
  try {
    await car(helia).import(reader, { offline: true })

    // 4: walk the DAG from the roots through Helia's blockstore.
    const reached = new Set()
    const missing = new Set()
    const stack = report.roots.map((r) => CID.parse(r))
    while (stack.length > 0) {
      const cid = stack.pop()
      const key = cid.toString()
      if (reached.has(key) || missing.has(key)) continue
      if (cid.multihash.code === IDENTITY) { reached.add(key); continue }
      if (!(await helia.blockstore.has(cid))) { missing.add(key); continue }
      reached.add(key)
      const bytes = await toBytes(helia.blockstore.get(cid, { offline: true }))
      for (const link of linksOf(cid, bytes)) stack.push(link)
    }
    report.missing = [...missing]
    report.unreachable = [...seen].filter((k) => !reached.has(k)).length

    // 5: read the UnixFS content back.
    if (report.missing.length === 0 && report.bad.length === 0) {
      const fs = unixfs(helia)
      const stats = { files: 0, directories: 0, symlinks: 0, bytes: 0 }
      const readEntry = async (cid, where) => {
        const st = await fs.stat(cid, { offline: true })
        const type = st.unixfs?.type ?? st.type
        if (type === 'directory' || type === 'hamt-sharded-directory') {
          stats.directories++
          for await (const entry of fs.ls(cid, { offline: true })) {
            await readEntry(entry.cid, `${where}/${entry.name}`)
          }
        } else if (type === 'symlink') {
          stats.symlinks++
        } else if (type === 'file' || type === 'raw') {
          stats.files++
          let n = 0n
          for await (const chunk of fs.cat(cid, { offline: true })) n += BigInt(chunk.byteLength)
          if (n !== BigInt(st.size)) report.errors.push(`${where} (${cid}): read ${n} bytes, UnixFS size says ${st.size}`)
          stats.bytes += Number(n)
        } else {
          report.errors.push(`${where} (${cid}): unexpected UnixFS type ${type}`)
        }
      }
      for (const root of report.roots) {
        const cid = CID.parse(root)
        if (cid.code === dagPb.code || cid.code === raw.code) await readEntry(cid, root)
      }
      report.unixfs = stats
    }
  } finally {
    await helia.stop()
  }
}

let failed = false
try {
  await main()
} catch (err) {
  report.errors.push(String(err?.stack ?? err))
}
failed = report.bad.length > 0 || report.missing.length > 0 || report.errors.length > 0 ||
  report.verified !== report.blocks
process.stdout.write(JSON.stringify(report) + '\n')
process.exit(failed ? 1 : 0)
