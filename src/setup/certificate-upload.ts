/**
 * The certificate method's two files, read before anything is sent to Entra, so a wrong upload is
 * named in plain words rather than as an OpenSSL error ("PEM routines::no start line") or an
 * AADSTS700027 that could mean either file. Accepted as people have them: the certificate in PEM or
 * DER (Entra's portal and Windows' certificate export give .cer files in DER), one file holding both
 * certificate and key (the PEM block each field needs is taken from it). What is stored is PEM: the
 * relay reads PEM (msal-token-provider.ts), and the stored file is named graph-certificate.pem.
 */
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';

export interface CertificatePair {
  /** The certificate as PEM (converted from DER when uploaded so). */
  certPem: string;
  /** The private key's PEM block as uploaded (still encrypted when it was). */
  keyPem: string;
  subject: string;
  /** The SHA-1 thumbprint, as Entra lists it under Certificates & secrets. */
  thumbprint: string;
  notAfter: number;
}

export interface CertificateProblem {
  message: string;
  fix: string;
}

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/;
const KEY_BLOCK = /-----BEGIN ((?:RSA |EC |ENCRYPTED )?)PRIVATE KEY-----[\s\S]+?-----END \1PRIVATE KEY-----/;

function readCertificate(upload: Buffer): X509Certificate | CertificateProblem {
  const text = upload.toString('latin1');
  const block = CERT_BLOCK.exec(text);
  if (!block && KEY_BLOCK.test(text)) {
    return { message: 'the certificate field holds a private key, not a certificate', fix: 'choose the certificate (.cer, .crt or .pem) for "Certificate" and its private key for "Private key"' };
  }
  try {
    return new X509Certificate(block ? Buffer.from(`${block[0]}\n`) : upload);
  } catch {
    return { message: 'the certificate file is not a certificate (neither PEM nor DER)', fix: 'upload the certificate you added to the app registration under Certificates & secrets (.cer, .crt or .pem)' };
  }
}

function readKey(upload: Buffer, passphrase: string | undefined): { key: KeyObject; pem: string } | CertificateProblem {
  const text = upload.toString('latin1');
  const block = KEY_BLOCK.exec(text);
  if (!block) {
    return CERT_BLOCK.test(text)
      ? { message: 'the private key field holds a certificate, not a private key', fix: 'choose the private key file (BEGIN PRIVATE KEY) for "Private key"; the certificate goes in "Certificate"' }
      : { message: 'the private key file holds no PEM private key', fix: 'upload the key in PEM (BEGIN PRIVATE KEY); convert a .pfx with: openssl pkcs12 -in app.pfx -nocerts -out app.key' };
  }
  // PKCS#8 "ENCRYPTED PRIVATE KEY", or OpenSSL's traditional format with a Proc-Type header. Asked
  // here: without a passphrase OpenSSL 3 only says "interrupted or cancelled".
  const encrypted = block[1] === 'ENCRYPTED ' || /Proc-Type: *4, *ENCRYPTED/.test(block[0]);
  if (encrypted && !passphrase) return { message: 'the private key is encrypted and no passphrase was given', fix: 'enter the key\'s passphrase under "Private key passphrase"' };
  try {
    return { key: createPrivateKey(passphrase ? { key: block[0], passphrase } : { key: block[0] }), pem: `${block[0]}\n` };
  } catch (err) {
    const code = (err as { code?: string }).code ?? '';
    if (passphrase && /BAD_DECRYPT|bad decrypt/i.test(`${code} ${(err as Error).message}`)) {
      return { message: 'the passphrase does not open the private key', fix: 'enter the passphrase the key was exported with' };
    }
    return { message: `the private key cannot be read (${(err as Error).message})`, fix: 'upload the private key created together with the certificate, in PEM' };
  }
}

/** The pair, or what is wrong with it; `now` for the expiry check. */
export function readCertificatePair(certUpload: Buffer, keyUpload: Buffer, passphrase: string | undefined, now: number): CertificatePair | CertificateProblem {
  const cert = readCertificate(certUpload);
  if (!(cert instanceof X509Certificate)) return cert;
  const key = readKey(keyUpload, passphrase);
  if ('message' in key) return key;
  // MSAL signs the client assertion with RS256/PS256 (test-pki.ts createClientCertificate).
  if (key.key.asymmetricKeyType !== 'rsa') {
    return { message: `the key is ${key.key.asymmetricKeyType ?? 'not RSA'}: Entra app certificates are signed with RSA (RS256/PS256)`, fix: 'create an RSA certificate, e.g. openssl req -x509 -newkey rsa:2048 -nodes -keyout app.key -out app.crt -days 730 -subj "/CN=smtp-graph-relay"' };
  }
  if (!cert.checkPrivateKey(key.key)) {
    return { message: `the private key does not belong to the certificate ${cert.subject}`, fix: 'upload the key created together with this certificate (both files come from the same openssl or export run)' };
  }
  const notAfter = Date.parse(cert.validTo);
  if (Number.isFinite(notAfter) && notAfter < now) {
    return { message: `the certificate ${cert.subject} expired on ${new Date(notAfter).toISOString().slice(0, 10)}`, fix: 'create a new certificate, add it to the app registration under Certificates & secrets, and upload it here' };
  }
  return { certPem: cert.toString(), keyPem: key.pem, subject: cert.subject, thumbprint: cert.fingerprint.replace(/:/g, ''), notAfter };
}
