// The official Node tus server (@tus/server with @tus/file-store) on 127.0.0.1, a differential
// oracle for the server's tus endpoint: prints `listening <port>`.
//   node tus-reference.mjs DIR
import * as http from 'node:http'
import { Server } from '@tus/server'
import { FileStore } from '@tus/file-store'

const [directory] = process.argv.slice(2)
const tus = new Server({
  path: '/files',
  datastore: new FileStore({ directory, expirationPeriodInMilliseconds: 3600 * 1000 }),
})
const server = http.createServer((req, res) => tus.handle(req, res))
server.listen(0, '127.0.0.1', () => console.log(`listening ${server.address().port}`))
