// Uploads FILE to ENDPOINT with tus-js-client in CHUNK-byte chunks, resuming the upload of the
// same file that a previous run recorded in STORE (a JSON file). Prints `resuming <url>` when it
// resumes, `accepted <bytes>` after each chunk the server acknowledged, `done <url>` at the end.
//   node tus-upload.mjs ENDPOINT TOKEN FILE STORE CHUNK
import * as fs from 'node:fs'
import * as tus from 'tus-js-client'

const [endpoint, token, file, store, chunk] = process.argv.slice(2)
const upload = new tus.Upload(fs.createReadStream(file), {
  endpoint,
  chunkSize: Number(chunk),
  uploadSize: fs.statSync(file).size,
  metadata: { filename: 'big.bin', filetype: 'application/octet-stream' },
  headers: { Authorization: `Bearer ${token}` },
  urlStorage: new tus.FileUrlStorage(store),
  storeFingerprintForResuming: true,
  removeFingerprintOnSuccess: true,
  retryDelays: [],
  onChunkComplete(_size, accepted) {
    console.log(`accepted ${accepted}`)
  },
  onError(error) {
    console.error(`error ${error}`)
    process.exit(1)
  },
  onSuccess() {
    console.log(`done ${upload.url}`)
  },
})
const previous = await upload.findPreviousUploads()
if (previous.length > 0) {
  console.log(`resuming ${previous[0].uploadUrl}`)
  upload.resumeFromPreviousUpload(previous[0])
}
upload.start()
