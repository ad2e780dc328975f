// Import a file or directory with ipfs-unixfs-importer (the importer Helia uses) and print
//   {"root": "<cid>", "entries": {"relative/posix/path": "<cid>", ...}}
// Usage: node --import ./polyfill.mjs import.mjs <dir-or-file> <v1|v0> [shardSplitThresholdBytes]
//
// Options are spelled out, not taken from defaults or from the importer's IPIP-499 `profile`s
// (its 'unixfs-v1-2025' means 1 MiB chunks and 1024 links, not ours):
//   fixed-size chunks of 262144 bytes, balanced layout with at most 174 links per node,
//   v1: CIDv1 + raw leaves, v0: CIDv0 + dag-pb 'file' leaves (Kubo's `ipfs add` defaults),
//   HAMT sharding when the links' estimated size (sum of name bytes + CID bytes, 'links-bytes',
//   as go-unixfs/boxo do it) exceeds 262144 bytes, fanout 256, no wrapping directory,
//   no mtime / mode.
// Directory entries: every directory (empty ones too) is passed as {path}; files as
// {path, content}; symlinks as {path, link: <target>} (UnixFS symlink nodes, not followed).
// Paths are given to the importer as "<root>/<relative path>" so the top directory is one entry
// whose CID is the root. Names are passed as JS strings: they must be valid UTF-8 (file names that
// are not are rejected here), and a backslash before '/' would be read as an escape by the importer.
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { BlackHoleBlockstore } from 'blockstore-core/black-hole'
import { promises as fs } from 'node:fs'
import path from 'node:path'

const PROFILES = {
  v1: { cidVersion: 1, rawLeaves: true },
  v0: { cidVersion: 0, rawLeaves: false, leafType: 'file' }
}

function usage (msg) {
  process.stderr.write(`${msg}\nusage: node --import ./polyfill.mjs import.mjs <dir-or-file> <v1|v0> [shardSplitThresholdBytes]\n`)
  process.exit(2)
}

const [target, profileName, thresholdArg] = process.argv.slice(2)
if (target == null || !(profileName in PROFILES)) usage('bad arguments')
// Only to show where other implementations put the boundary (Kubo 0.22 shards at >= 262144,
// this importer at > 262144): the default is what the tests compare against.
const threshold = thresholdArg == null ? 262144 : Number(thresholdArg)
if (!Number.isSafeInteger(threshold) || threshold < 0) usage('bad shardSplitThresholdBytes')

const ROOT = 'root'

function lazyContent (file) {
  return (async function * () {
    const handle = await fs.open(file, 'r')
    try {
      const buf = Buffer.alloc(1 << 20)
      while (true) {
        const { bytesRead } = await handle.read(buf, 0, buf.length, null)
        if (bytesRead === 0) break
        yield Uint8Array.prototype.slice.call(buf, 0, bytesRead)
      }
    } finally {
      await handle.close()
    }
  })()
}

const emptyDirs = []

async function * candidates (abs, rel) {
  const st = await fs.lstat(abs)
  const name = rel === '' ? ROOT : `${ROOT}/${rel}`
  if (st.isSymbolicLink()) {
    yield { path: name, link: await fs.readlink(abs) }
  } else if (st.isFile()) {
    yield { path: name, content: lazyContent(abs) }
  } else if (st.isDirectory()) {
    yield { path: name }
    // Canonical order: names sorted by their UTF-8 bytes, each directory before its contents
    // (a depth-first pre-order). Links are sorted by the encoder anyway, but the order entries
    // reach the tree builder decides when a directory is checked against the shard threshold.
    const names = (await fs.readdir(abs, { encoding: 'buffer' }))
      .sort(Buffer.compare)
      .map((b) => new TextDecoder('utf-8', { fatal: true }).decode(b))
    if (names.length === 0 && rel !== '') emptyDirs.push(rel)
    for (const child of names) {
      yield * candidates(path.join(abs, child), rel === '' ? child : `${rel}/${child}`)
    }
  } else {
    throw new Error(`unsupported file type: ${abs}`)
  }
}

const options = {
  ...PROFILES[profileName],
  chunker: fixedSize({ chunkSize: 262144 }),
  layout: balanced({ maxChildrenPerNode: 174 }),
  reduceSingleLeafToSelf: true,
  shardSplitThresholdBytes: threshold,
  shardSplitStrategy: 'links-bytes',
  shardFanoutBits: 8,
  wrapWithDirectory: false
}

const entries = {}
let root = null
for await (const entry of importer(candidates(path.resolve(target), ''), new BlackHoleBlockstore(), options)) {
  const p = entry.path ?? ''
  if (p === ROOT) {
    root = entry.cid.toString()
  } else if (p.startsWith(`${ROOT}/`)) {
    entries[p.slice(ROOT.length + 1)] = entry.cid.toString()
  } else {
    throw new Error(`unexpected path from importer: ${JSON.stringify(p)}`)
  }
}
if (root == null) throw new Error('importer yielded no root entry')
// The importer yields no entry for an empty subdirectory (it is linked, just not reported):
// its CID is that of any empty directory under these options.
if (emptyDirs.length > 0) {
  let emptyCid = null
  for await (const entry of importer([{ path: 'empty' }], new BlackHoleBlockstore(), options)) {
    emptyCid = entry.cid.toString()
  }
  for (const rel of emptyDirs) entries[rel] ??= emptyCid
}
process.stdout.write(JSON.stringify({ root, entries }) + '\n')
