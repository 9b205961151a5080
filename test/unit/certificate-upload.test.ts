/** The setup page's certificate method: the two uploaded files read, and what is wrong with them said plainly. */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { createClientCertificate, createTestPki } from '../../src/emulator/test-pki.js';
import { readCertificatePair, type CertificatePair, type CertificateProblem } from '../../src/setup/certificate-upload.js';

let app: { certPem: string; keyPem: string };
let other: { certPem: string; keyPem: string };
const NOW = Date.now();

beforeAll(async () => {
  [app, other] = await Promise.all([createClientCertificate('relay app'), createClientCertificate('another app')]);
});

const read = (cert: string | Buffer, key: string | Buffer, passphrase?: string, now = NOW) => readCertificatePair(Buffer.from(cert), Buffer.from(key), passphrase, now);
/** PEM as stored: OpenSSL's line breaks, ending in a newline (@peculiar/x509 writes none at the end). */
const pem = (text: string) => `${text.trim()}\n`;
const problem = (result: CertificatePair | CertificateProblem) => ('message' in result ? result.message : null);

describe('certificate upload', () => {
  it('takes a PEM pair, and names the certificate with the thumbprint Entra lists', () => {
    const pair = read(app.certPem, app.keyPem) as CertificatePair;
    expect(pair.subject).toBe('CN=relay app');
    expect(pair.thumbprint).toBe(new X509Certificate(app.certPem).fingerprint.replace(/:/g, ''));
    expect(pair.certPem).toBe(pem(app.certPem));
    expect(pair.keyPem).toBe(app.keyPem);
  });

  it('stores a DER certificate (.cer) as PEM, and takes each block from one file holding both', () => {
    const der = new X509Certificate(app.certPem).raw;
    expect((read(der, app.keyPem) as CertificatePair).certPem).toBe(pem(app.certPem));
    const both = app.certPem + app.keyPem;
    const pair = read(both, both) as CertificatePair;
    expect(pair.certPem).toBe(pem(app.certPem));
    expect(pair.keyPem).toBe(app.keyPem);
  });

  it('says which file is wrong: swapped, not a certificate, not a key, a key of another certificate', () => {
    expect(problem(read(app.keyPem, app.certPem))).toBe('the certificate field holds a private key, not a certificate');
    expect(problem(read(app.certPem, app.certPem))).toBe('the private key field holds a certificate, not a private key');
    expect(problem(read('hello', app.keyPem))).toBe('the certificate file is not a certificate (neither PEM nor DER)');
    expect(problem(read(app.certPem, 'world'))).toBe('the private key file holds no PEM private key');
    expect(problem(read(app.certPem, other.keyPem))).toBe('the private key does not belong to the certificate CN=relay app');
  });

  it('asks for the passphrase of an encrypted key, and says when it is wrong', () => {
    const encrypted = createPrivateKey(app.keyPem).export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'right' }).toString();
    expect(problem(read(app.certPem, encrypted))).toBe('the private key is encrypted and no passphrase was given');
    expect(problem(read(app.certPem, encrypted, 'wrong'))).toBe('the passphrase does not open the private key');
    const pair = read(app.certPem, encrypted, 'right') as CertificatePair;
    // Stored as uploaded: still encrypted (the passphrase stays in the configuration or the env file).
    expect(pair.keyPem).toBe(encrypted);
  });

  it('refuses an expired certificate and a key Entra cannot use (EC)', async () => {
    const notAfter = Date.parse(new X509Certificate(app.certPem).validTo);
    expect(problem(read(app.certPem, app.keyPem, undefined, notAfter + 86_400_000))).toMatch(/^the certificate CN=relay app expired on \d{4}-\d\d-\d\d$/);
    const ec = await (await createTestPki()).issueServerCertificate(['relay.test']);
    expect(problem(read(ec.certPem, ec.keyPem))).toBe('the key is ec: Entra app certificates are signed with RSA (RS256/PS256)');
  });
});
