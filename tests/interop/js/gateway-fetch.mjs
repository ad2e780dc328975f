// Fetch content from a DRE node's IPFS gateway the way IPFS clients do, verifying every byte.
// Prints one JSON line:
//   {"car": {...}, "raw": {...}, "verifiedFetch": {...}, "errors": [...]}
// and exits 1 on any fault (2 on bad usage).
// Usage: node --import ./polyfill.mjs gateway-fetch.mjs <gateway-url> <root-cid> <paths.json>
//   <paths.json> is a JSON list of file paths below the root to read with verified-fetch.
//
// 1. CAR: GET <gw>/ipfs/<root>?format=car (with the trustless Accept header); the Content-Type
//    is checked, @ipld/car's CarReader parses the stream, every block is hashed (sha2-256) and
//    compared with its CID, and ipfs-unixfs-exporter reads every file of the DAG out of those
//    blocks alone (a block the walk needs and the CAR lacks is an error). Each file's size and
//    sha256 are reported for the caller to compare.
// 2. Raw blocks: GET <gw>/ipfs/<cid>?format=raw for every CID of the CAR; each body is hashed
//    and compared with its CID and with the CAR's copy.
// 3. @helia/verified-fetch over a Helia node whose only block source is the gateway (the
//    trustless-gateway block broker: it fetches ?format=raw blocks and verifies each one). No
//    libp2p, no delegated routing, no public gateways: only <gw>.
import { CarReader } from '@ipld/car'
import { createVerifiedFetch } from '@helia/verified-fetch'
import { fallbackRouter } from '@helia/fallback-router'
import { withHTTP } from '@helia/http'
import { createHeliaLight } from 'helia'
import { exporter, recursive } from 'ipfs-unixfs-exporter'
import { sha256 } from 'multiformats/hashes/sha2'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'

const SHA2_256 = 0x12
const CAR_TYPE = 'application/vnd.ipld.car; version=1; order=dfs; dups=n'
const RAW_TYPE = 'application/vnd.ipld.raw'

if (process.argv.length !== 5) {
  process.stderr.write('usage: node --import ./polyfill.mjs gateway-fetch.mjs <gateway-url> <root-cid> <paths.json>\n')
  process.exit(2)
}
const [gateway, root, pathsFile] = process.argv.slice(2)
const paths = JSON.parse(readFileSync(pathsFile, 'utf8'))

const report = {
  car: { status: null, contentType: null, roots: [], blocks: 0, verified: 0, bad: [], files: {} },
  raw: { fetched: 0, verified: 0, bad: [], differs: [], contentTypes: [] },
  verifiedFetch: {},
  errors: []
}

function eq (a, b) {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

const hex = (bytes) => createHash('sha256').update(bytes).digest('hex')

async function checkHash (cid, bytes) {
  if (cid.multihash.code !== SHA2_256) return false
  const digest = await sha256.digest(bytes)
  return eq(digest.bytes, cid.multihash.bytes)
}

async function car () {
  const response = await fetch(`${gateway}/ipfs/${root}?format=car`, {
    headers: { Accept: CAR_TYPE }
  })
  report.car.status = response.status
  report.car.contentType = response.headers.get('content-type')
  if (response.status !== 200) throw new Error(`CAR request: HTTP ${response.status}: ${await response.text()}`)
  const reader = await CarReader.fromBytes(new Uint8Array(await response.arrayBuffer()))
  report.car.roots = (await reader.getRoots()).map(String)
  const blocks = new Map()
  for await (const { cid, bytes } of reader.blocks()) {
    report.car.blocks++
    if (await checkHash(cid, bytes)) report.car.verified++
    else report.car.bad.push(cid.toString())
    blocks.set(cid.toString(), { cid, bytes })
  }
  // Only the CAR's blocks: a block the exporter needs and the CAR lacks is an error.
  const blockstore = {
    async * get (cid) {
      const found = blocks.get(cid.toString())
      if (found == null) throw new Error(`block ${cid} is not in the CAR`)
      yield found.bytes
    },
    async has (cid) { return blocks.has(cid.toString()) }
  }
  for await (const found of recursive(root, blockstore)) {
    const entry = await exporter(found.cid, blockstore)
    if (entry.type !== 'file' && entry.type !== 'raw') continue
    const chunks = []
    for await (const chunk of entry.content()) chunks.push(chunk)
    const data = Buffer.concat(chunks)
    const relative = found.path.split('/').slice(1).join('/')
    report.car.files[relative] = { size: data.length, sha256: hex(data) }
  }
  return blocks
}

async function raw (blocks) {
  const types = new Set()
  for (const { cid, bytes } of blocks.values()) {
    const response = await fetch(`${gateway}/ipfs/${cid}?format=raw`, { headers: { Accept: RAW_TYPE } })
    if (response.status !== 200) {
      report.raw.bad.push(`${cid}: HTTP ${response.status}`)
      continue
    }
    types.add(response.headers.get('content-type'))
    const body = new Uint8Array(await response.arrayBuffer())
    report.raw.fetched++
    if (await checkHash(cid, body)) report.raw.verified++
    else report.raw.bad.push(cid.toString())
    if (!eq(body, bytes)) report.raw.differs.push(cid.toString())
  }
  report.raw.contentTypes = [...types]
}

async function viaVerifiedFetch () {
  const helia = withHTTP(createHeliaLight({}), {
    delegatedRouters: [],
    recursiveGateways: [],
    allowInsecure: true,
    allowLocal: true
  })
  // Our gateway is the one provider of every CID. Given as an ordinary router: Helia 7.1's
  // routing never finishes a provider search when it has only fallback routers (its idle
  // signal waits for a default router to end), so `recursiveGateways: [gateway]` would hang.
  const gatewayOnly = fallbackRouter({ gateways: [gateway], shuffle: false })
  helia.addRouter({
    name: 'dre-gateway',
    findProviders: (cid, options) => gatewayOnly.findProviders(cid, options)
  })
  await helia.start()
  const verifiedFetch = await createVerifiedFetch(helia)
  try {
    for (const path of paths) {
      const encoded = path.split('/').map(encodeURIComponent).join('/')
      const response = await verifiedFetch(`ipfs://${root}/${encoded}`, {
        signal: AbortSignal.timeout(30_000)
      })
      const data = new Uint8Array(await response.arrayBuffer())
      report.verifiedFetch[path] = { status: response.status, size: data.length, sha256: hex(data) }
    }
  } finally {
    await verifiedFetch.stop()
    await helia.stop()
  }
}

try {
  const blocks = await car()
  await raw(blocks)
  await viaVerifiedFetch()
} catch (err) {
  report.errors.push(String(err?.stack ?? err))
}
const failed = report.errors.length > 0 || report.car.bad.length > 0 || report.raw.bad.length > 0 ||
  report.raw.differs.length > 0 || report.car.verified !== report.car.blocks
process.stdout.write(JSON.stringify(report) + '\n')
process.exit(failed ? 1 : 0)
